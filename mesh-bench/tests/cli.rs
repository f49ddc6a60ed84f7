//! `mesh-bench` as a user runs it: the real binary, real nodes on loopback.

use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_mesh-bench");

/// The fields other systems are compared on: renaming one breaks that.
const DHT_FIELDS: &[&str] = &[
    "system",
    "peers",
    "keys",
    "startup_s",
    "put_ops_per_s",
    "get_ops_per_s",
    "put_p50_ms",
    "put_p99_ms",
    "get_p50_ms",
    "get_p99_ms",
    "put_success",
    "get_recall",
    "rss_mb",
];

fn run_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BENCH).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mesh-bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line expected, got {stdout}");
    serde_json::from_str(lines[0]).unwrap()
}

#[test]
fn dht_bench_prints_one_json_line_with_the_stable_fields() {
    for transport in ["tcp", "memory"] {
        let v = run_json(&[
            "dht",
            "--peers",
            "12",
            "--keys",
            "20",
            "--concurrency",
            "4",
            "--transport",
            transport,
            "--json",
        ]);
        for f in DHT_FIELDS {
            assert!(v.get(f).is_some(), "{transport}: field {f} missing in {v}");
        }
        assert_eq!(v["system"], "mesh");
        assert_eq!(v["transport"], transport);
        assert_eq!(v["peers"], 12);
        assert_eq!(v["keys"], 20);
        // Twelve nodes on one machine hold every key they were given.
        assert_eq!(v["put_success"], 1.0, "{v}");
        assert_eq!(v["get_recall"], 1.0, "{v}");
        assert!(v["put_ops_per_s"].as_f64().unwrap() > 0.0);
        assert!(v["rss_mb"].as_f64().unwrap() > 1.0);
        assert!(v["routing_table_per_peer"].as_f64().unwrap() >= 1.0);
    }
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    for (args, says) in [
        (&["dht", "--peers", "1"][..], "--peers must be at least 2"),
        (&["dht", "--keys", "0"][..], "must be positive"),
        (&["dht", "--idle-timeout=-1"][..], "--idle-timeout must be"),
        (&["churn", "--peers", "4"][..], "--peers must be at least 8"),
        (&["churn", "--waves", "4"][..], "--waves is at most 3"),
        (
            &["churn", "--refresh-period", "0"][..],
            "--refresh-period must be",
        ),
        (
            &["dht", "--transport", "carrier-pigeon"][..],
            "invalid value",
        ),
    ] {
        let out = Command::new(BENCH).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed a result");
    }
}

#[test]
fn churn_bench_loses_no_record_and_prints_the_stable_fields() {
    let v = run_json(&[
        "churn", "--peers", "12", "--keys", "30", "--waves", "3", "--json",
    ]);
    for f in [
        "system",
        "peers",
        "keys",
        "waves",
        "recall_after_waves",
        "repair_s",
        "repair_bytes",
        "get_p50_ms",
        "rss_mb",
    ] {
        assert!(v.get(f).is_some(), "field {f} missing in {v}");
    }
    assert_eq!(v["bench"], "churn");
    assert_eq!(v["killed_per_wave"], 3);
    // Three quarters of the nodes died and every record is still read back.
    assert_eq!(v["recall_after_waves"], 1.0, "{v}");
    assert_eq!(v["keys_lost"], 0, "{v}");
    assert_eq!(v["repaired_every_wave"], true, "{v}");
    assert!(v["repair_bytes"].as_u64().unwrap() > 0, "{v}");
}
