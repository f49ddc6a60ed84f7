//! The gateway driven by the official `openai` Python package
//! (scripts/fetch-pytools.sh installs it in a venv) against the real
//! subnet: the dev chain, two staked inference servers with the real
//! SmolLM2 (one also embeds with MiniLM), and the gateway joined as a
//! registered client. Texts must equal the engine's own greedy output,
//! vectors the model's own, and every error case must raise the exception
//! type the SDK maps its HTTP status to. Eight users stream at once; the
//! read API (`/v1/nodes`, `/v1/dht/{key}`) and CORS are checked over HTTP.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use mesh_chain::devnode::{register_dev_node_with_client, DevNode};
use mesh_chain::{chain_stake_oracle, ChainClient, SignerSource};
use mesh_core::{KeyType, PeerId, PeerKey, RateLimit};
use mesh_dht::{Dht, DhtConfig, Multiaddr};
use mesh_gateway::{ApiKeys, Gateway, GatewayConfig};
use mesh_inference::embed::MiniLm;
use mesh_inference::{
    ChatMessage, Completion, Engine, EngineConfig, FinishReason, GenerateRequest, Prompt,
    SamplingParams,
};
use mesh_subnet_inference::test_utils::staked_server;
use mesh_subnet_inference::InferenceSubnet;
use serde_json::Value;

const KEY: &str = "test-key-0123456789abcdef";
const FLOOD_KEY: &str = "flood-key-0123456789abcdef";
/// The eight concurrent users' key (its own rate-limit budget).
const CROWD_KEY: &str = "crowd-key-0123456789abcdef";
const QUESTION: &str = "What is the capital of France?";
const TEXT_PROMPT: &str = "The capital of France is";
const TOKENS: usize = 24;
const LONG_PROMPT: &str = "Once upon a time, in a small village by the sea,";
const LONG_TOKENS: usize = 160;
const TEXTS: [&str; 2] = ["A cat sits on the mat.", "Stocks fell sharply on Monday."];

/// The calls, each printed as one JSON line the test checks.
const SCRIPT: &str = r#"
import json, os, sys
import openai
from openai import OpenAI

base = os.environ["BASE_URL"]
key = os.environ["KEY"]
model = os.environ["MODEL"]
tokens = int(os.environ["TOKENS"])
client = OpenAI(base_url=base, api_key=key, max_retries=0)
question = [{"role": "user", "content": os.environ["QUESTION"]}]
out = {}

r = client.chat.completions.create(model=model, messages=question, max_tokens=tokens, temperature=0)
out["chat"] = {"text": r.choices[0].message.content, "finish": r.choices[0].finish_reason,
               "prompt_tokens": r.usage.prompt_tokens, "completion_tokens": r.usage.completion_tokens,
               "object": r.object}

r = client.chat.completions.create(model=model, max_tokens=tokens, temperature=0,
    messages=[{"role": "user", "content": [{"type": "text", "text": os.environ["QUESTION"]}]}])
out["parts"] = {"text": r.choices[0].message.content}

stream = client.chat.completions.create(model=model, messages=question, max_tokens=tokens,
                                        temperature=0, stream=True, stream_options={"include_usage": True})
text, finish, usage, chunks = "", None, None, 0
for chunk in stream:
    chunks += 1
    if chunk.usage is not None:
        usage = chunk.usage.completion_tokens
    for c in chunk.choices:
        if c.delta.content:
            text += c.delta.content
        if c.finish_reason:
            finish = c.finish_reason
out["stream"] = {"text": text, "finish": finish, "completion_tokens": usage, "chunks": chunks}

# Eight users at once, each streaming: every stream is whole and the same.
from concurrent.futures import ThreadPoolExecutor
crowd = OpenAI(base_url=base, api_key=os.environ["CROWD_KEY"], max_retries=0)
def one_stream(_):
    s = crowd.chat.completions.create(model=model, messages=question, max_tokens=tokens,
                                       temperature=0, stream=True)
    return "".join(c.delta.content or "" for chunk in s for c in chunk.choices)
with ThreadPoolExecutor(8) as pool:
    out["concurrent"] = list(pool.map(one_stream, range(8)))

r = client.completions.create(model=model, prompt=os.environ["TEXT_PROMPT"], max_tokens=tokens, temperature=0)
out["completion"] = {"text": r.choices[0].text}

r = client.embeddings.create(model="all-MiniLM-L6-v2", input=json.loads(os.environ["TEXTS"]))
out["embeddings"] = [d.embedding for d in r.data]

out["models"] = sorted(m.id for m in client.models.list())

def error(call):
    try:
        call()
    except openai.APIStatusError as e:
        return {"type": type(e).__name__, "status": e.status_code, "code": (e.body or {}).get("code")}
    except Exception as e:
        return {"type": type(e).__name__, "status": None, "code": None}
    return {"type": None, "status": None, "code": None}

errors = {}
import urllib.request, urllib.error
try:
    urllib.request.urlopen(base + "/models")
    errors["no_key"] = {"type": None, "status": 200, "code": None}
except urllib.error.HTTPError as e:
    errors["no_key"] = {"type": "AuthenticationError" if e.code == 401 else None,
                        "status": e.code, "code": json.loads(e.read())["error"]["code"]}
errors["bad_key"] = error(lambda: OpenAI(base_url=base, api_key="not-a-key-of-this-gateway", max_retries=0).models.list())
errors["unknown_model"] = error(lambda: client.chat.completions.create(model="gpt-4o", messages=question))
errors["n2"] = error(lambda: client.chat.completions.create(model=model, messages=question, n=2))
errors["bad_top_p"] = error(lambda: client.chat.completions.create(model=model, messages=question, top_p=3))
errors["too_long"] = error(lambda: client.completions.create(model=model, prompt="word " * 9000, max_tokens=1))
flood = OpenAI(base_url=base, api_key=os.environ["FLOOD_KEY"], max_retries=0)
first_refusal = None
for i in range(40):
    e = error(lambda: flood.models.list())
    if e["type"] is not None:
        first_refusal = dict(e, after=i)
        break
errors["flood"] = first_refusal
out["errors"] = errors
print(json.dumps(out))
"#;

/// A long streamed completion that pauses after its third chunk until told
/// to go on (the test kills the serving server meanwhile).
const FAILOVER: &str = r#"
import json, os, sys
from openai import OpenAI
client = OpenAI(base_url=os.environ["BASE_URL"], api_key=os.environ["KEY"], max_retries=0)
stream = client.completions.create(model=os.environ["MODEL"], prompt=os.environ["LONG_PROMPT"],
                                   max_tokens=int(os.environ["LONG_TOKENS"]), temperature=0, stream=True)
text, chunks, finish, mesh = "", 0, None, None
for chunk in stream:
    choice = chunk.choices[0]
    text += choice.text or ""
    chunks += 1
    if chunks == 3:
        print("streaming", flush=True)
        sys.stdin.readline()
    if choice.finish_reason:
        finish = choice.finish_reason
        mesh = (chunk.model_extra or {}).get("mesh")
print(json.dumps({"text": text, "finish": finish, "mesh": mesh}), flush=True)
"#;

/// The chat page in headless Chromium, through WebDriver.
const BROWSER: &str = r#"
import json, os, tempfile
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

opts = Options()
opts.binary_location = "/usr/bin/chromium"
for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--window-size=1100,800", "--user-data-dir=" + tempfile.mkdtemp()]:
    opts.add_argument(flag)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
try:
    driver.get(os.environ["PAGE"])
    key = driver.find_element(By.ID, "key")
    key.send_keys(os.environ["KEY"])
    key.send_keys(Keys.TAB)
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "model").get_attribute("value"))
    prompt = driver.find_element(By.ID, "prompt")
    prompt.send_keys(os.environ["QUESTION"])
    prompt.send_keys(Keys.ENTER)
    WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg[data-done]:not(.user)"))
    got = driver.execute_script(
        "const e = document.querySelector('.msg[data-done]:not(.user)');"
        "const meta = e.querySelector('.meta');"
        "return {class: e.className, text: e.firstChild ? e.firstChild.textContent : '',"
        " meta: meta ? meta.textContent : '', status: document.getElementById('status').textContent};")
    driver.save_screenshot(os.environ["SCREENSHOT"])
    print(json.dumps(got))
finally:
    driver.quit()
"#;

fn python() -> PathBuf {
    let venv = std::env::var_os("MESH_PYTOOLS").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/mesh-pytools"),
        PathBuf::from,
    );
    let python = venv.join("bin/python");
    assert!(
        python.is_file(),
        "{} missing: run scripts/fetch-pytools.sh",
        python.display()
    );
    python
}

fn run(python: &PathBuf, script: &str, env: &[(&str, String)]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.py");
    std::fs::write(&path, script).unwrap();
    let out = Command::new(python)
        .arg(&path)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python script failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn engine() -> Arc<Engine> {
    let path = mesh_inference::find_smollm2().unwrap_or_else(|e| panic!("{e}"));
    let mut config = EngineConfig::new(path);
    config.max_batch = 4;
    Arc::new(Engine::start(config).expect("the engine starts"))
}

fn embedder() -> Arc<MiniLm<mesh_inference::backend::Cpu>> {
    let dir = mesh_inference::models_dir().join("all-minilm-l6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} missing: run scripts/fetch-models.sh minilm",
        dir.display()
    );
    Arc::new(MiniLm::load(&dir, &Default::default()).unwrap())
}

async fn greedy(engine: &Engine, prompt: Prompt, tokens: usize) -> Completion {
    engine
        .generate(GenerateRequest {
            prompt,
            params: SamplingParams::greedy(tokens),
        })
        .unwrap()
        .collect()
        .await
        .unwrap()
}

/// OpenAI's name for the engine's reason.
fn finish(c: &Completion) -> &'static str {
    match c.finished.reason {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Eos => "stop",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_openai_client_chats_streams_completes_embeds_and_gets_typed_errors() {
    let python = python();
    let chain = DevNode::start().expect("start mesh-chain-node (run scripts/build-chain.sh first)");
    let client = ChainClient::connect(chain.url()).await.unwrap();
    let signer = |uri: &str| SignerSource::Phrase(uri.into()).keypair().unwrap();
    let alice = signer("//Alice");
    let subnet_id = client.create_subnet(&alice, "gateway", true).await.unwrap();

    // The gateway's key is the first operator's client PeerId.
    let gateway_key = PeerKey::generate(KeyType::Ed25519).unwrap();
    let server_keys: Vec<PeerKey> = (0..2)
        .map(|_| PeerKey::generate(KeyType::Ed25519).unwrap())
        .collect();
    for (i, (key, hotkey)) in server_keys.iter().zip(["//Bob", "//Charlie"]).enumerate() {
        let client_peer_id = if i == 0 {
            gateway_key.peer_id()
        } else {
            PeerId::random()
        };
        register_dev_node_with_client(
            &client,
            &alice,
            subnet_id,
            &signer(hotkey),
            key.peer_id(),
            client_peer_id,
        )
        .await
        .unwrap();
    }
    let oracle = chain_stake_oracle(client.clone(), Duration::from_secs(300));

    let engine = engine();
    let embedder = embedder();
    let mut servers = Vec::new();
    let mut first: Option<Multiaddr> = None;
    for (i, key) in server_keys.iter().enumerate() {
        let subnet = InferenceSubnet::new(engine.clone(), (i == 0).then(|| embedder.clone()));
        let node = staked_server(
            key.clone(),
            subnet_id,
            oracle.oracle(),
            first.iter().cloned().collect(),
            subnet,
        )
        .await
        .expect("a server starts");
        if first.is_none() {
            first = Some(node.context().dht.listen_addrs().await.unwrap()[0].clone());
        }
        servers.push(node);
    }

    let mut dht = DhtConfig::new(gateway_key.clone());
    dht.subnet_id = subnet_id;
    dht.client_mode = true;
    dht.initial_peers = first.iter().cloned().collect();
    dht.bootstrap_timeout = Duration::from_secs(10);
    let dht = Dht::start(dht).await.expect("the gateway joins");
    let mut config = GatewayConfig::new("127.0.0.1:0".parse().unwrap());
    config.api_keys = Some(
        ApiKeys::parse(&format!(
            "tests {KEY}\nflood {FLOOD_KEY}\ncrowd {CROWD_KEY}\n"
        ))
        .unwrap(),
    );
    config.rate_limit = Some(RateLimit {
        per_second: 0.1,
        burst: 30.0,
    });
    let gateway_key = Arc::new(gateway_key);
    let gateway = Gateway::start(config, dht.clone(), gateway_key.clone())
        .await
        .unwrap();

    // Both servers' heartbeats are in before the calls.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let alive = mesh_server::alive_peers::<mesh_subnet_inference::InferenceInfo>(&dht)
            .await
            .unwrap();
        if alive.len() == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "heartbeats: {alive:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let model = engine.info().model.clone();
    let env = [
        ("BASE_URL", format!("http://{}/v1", gateway.addr())),
        ("KEY", KEY.to_string()),
        ("FLOOD_KEY", FLOOD_KEY.to_string()),
        ("CROWD_KEY", CROWD_KEY.to_string()),
        ("MODEL", model.clone()),
        ("TOKENS", TOKENS.to_string()),
        ("QUESTION", QUESTION.to_string()),
        ("TEXT_PROMPT", TEXT_PROMPT.to_string()),
        ("TEXTS", serde_json::to_string(&TEXTS).unwrap()),
    ];
    let python_run = {
        let python = python.clone();
        let env = env.clone();
        tokio::task::spawn_blocking(move || run(&python, SCRIPT, &env))
    };
    let chat_reference = greedy(
        &engine,
        Prompt::Chat(vec![ChatMessage {
            role: "user".into(),
            content: QUESTION.into(),
        }]),
        TOKENS,
    )
    .await;
    let text_reference = greedy(&engine, Prompt::Text(TEXT_PROMPT.into()), TOKENS).await;
    let vectors = embedder.embed(&TEXTS);
    let out = python_run.await.unwrap();

    assert_eq!(out["chat"]["object"], "chat.completion");
    assert_eq!(out["chat"]["text"], chat_reference.text.as_str(), "{out}");
    assert_eq!(out["chat"]["finish"], finish(&chat_reference));
    let (prompt_tokens, completion_tokens) = (
        chat_reference.finished.prompt_tokens,
        chat_reference.finished.completion_tokens,
    );
    assert_eq!(out["chat"]["completion_tokens"], completion_tokens);
    assert_eq!(out["chat"]["prompt_tokens"], prompt_tokens);
    assert_eq!(
        out["parts"]["text"],
        chat_reference.text.as_str(),
        "content as parts"
    );
    assert_eq!(out["stream"]["text"], chat_reference.text.as_str(), "{out}");
    assert_eq!(out["stream"]["finish"], finish(&chat_reference));
    assert_eq!(out["stream"]["completion_tokens"], completion_tokens);
    assert!(
        out["stream"]["chunks"].as_u64().unwrap() > 3,
        "streamed in chunks"
    );
    let concurrent = out["concurrent"]
        .as_array()
        .expect("eight concurrent streams");
    assert_eq!(concurrent.len(), 8);
    for text in concurrent {
        assert_eq!(text, chat_reference.text.as_str(), "a concurrent stream");
    }
    assert_eq!(out["completion"]["text"], text_reference.text.as_str());
    let got: Vec<Vec<f32>> = serde_json::from_value(out["embeddings"].clone()).unwrap();
    assert_eq!(got.len(), vectors.len());
    for (g, want) in got.iter().zip(&vectors) {
        assert_eq!(g.len(), want.len());
        let gap = g
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(gap < 1e-5, "vectors differ by {gap}");
    }
    assert_eq!(
        out["models"],
        serde_json::json!(["all-MiniLM-L6-v2", model.as_str()])
            .as_array()
            .map(|v| {
                let mut v = v.clone();
                v.sort_by_key(|m| m.as_str().unwrap().to_string());
                Value::Array(v)
            })
            .unwrap()
    );
    let errors = &out["errors"];
    let expect = |case: &str, kind: &str, status: u64, code: &str| {
        assert_eq!(
            (
                errors[case]["type"].as_str(),
                errors[case]["status"].as_u64(),
                errors[case]["code"].as_str()
            ),
            (Some(kind), Some(status), Some(code)),
            "{case}: {}",
            errors[case]
        );
    };
    expect("no_key", "AuthenticationError", 401, "invalid_api_key");
    expect("bad_key", "AuthenticationError", 401, "invalid_api_key");
    expect("unknown_model", "NotFoundError", 404, "model_not_found");
    expect("n2", "BadRequestError", 400, "invalid_request");
    expect("bad_top_p", "BadRequestError", 400, "invalid_request");
    expect("too_long", "APIStatusError", 413, "context_length_exceeded");
    expect("flood", "RateLimitError", 429, "rate_limit_exceeded");
    let after = errors["flood"]["after"].as_u64().unwrap();
    assert!(
        (30..=31).contains(&after),
        "the burst of 30, then refused: {after}"
    );

    // The gateway's metrics count what it answered (three chats, then the
    // eight concurrent ones).
    let metrics = http_get(gateway.addr(), "/metrics").await;
    assert!(
        metrics.contains("mesh_gateway_requests_total{route=\"chat\",status=\"200\"} 11"),
        "{metrics}"
    );
    assert!(metrics.contains("mesh_gateway_errors_total{code=\"model_not_found\"} 1"));

    // The read API for front-ends: the live servers with their heartbeat
    // info, and a key's merged value with its subkeys.
    let nodes = json_body(&http(gateway.addr(), "GET", "/v1/nodes", CROWD_KEY).await);
    let mut listed: Vec<&str> = nodes["data"]
        .as_array()
        .expect("a list of nodes")
        .iter()
        .map(|n| {
            assert_eq!(n["model"], model.as_str(), "{n}");
            assert!(n["expires_in_s"].as_f64().unwrap() > 0.0, "{n}");
            n["peer_id"].as_str().unwrap()
        })
        .collect();
    listed.sort();
    let mut servers_ids: Vec<String> = server_keys
        .iter()
        .map(|k| k.peer_id().to_base58())
        .collect();
    servers_ids.sort();
    assert_eq!(listed, servers_ids);
    let heartbeats = json_body(&http(gateway.addr(), "GET", "/v1/dht/node", CROWD_KEY).await);
    assert_eq!(heartbeats["kind"], "dictionary", "{heartbeats}");
    assert_eq!(
        heartbeats["subkeys"].as_object().unwrap().len(),
        2,
        "{heartbeats}"
    );
    let missing = http(gateway.addr(), "GET", "/v1/dht/no-such-key", CROWD_KEY).await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let unkeyed = http(
        gateway.addr(),
        "GET",
        "/v1/nodes",
        "not-a-key-of-this-gateway",
    )
    .await;
    assert!(unkeyed.starts_with("HTTP/1.1 401"), "{unkeyed}");

    // CORS is off unless asked for: no allow-origin header here; a gateway
    // started with an origin answers preflights and names it on answers.
    assert!(
        !allows_page_origin(&http(gateway.addr(), "GET", "/health", KEY).await),
        "CORS is off by default"
    );
    let mut cors_config = GatewayConfig::new("127.0.0.1:0".parse().unwrap());
    cors_config.cors_origin = Some(axum::http::HeaderValue::from_static("http://page.test"));
    let cors_gateway = Gateway::start(cors_config, dht.clone(), gateway_key.clone())
        .await
        .unwrap();
    let preflight = http(cors_gateway.addr(), "OPTIONS", "/v1/chat/completions", KEY).await;
    assert!(preflight.starts_with("HTTP/1.1 204"), "{preflight}");
    assert!(allows_page_origin(&preflight), "{preflight}");
    let health = http(cors_gateway.addr(), "GET", "/health", KEY).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(allows_page_origin(&health), "{health}");
    cors_gateway.shutdown().await;

    // A client that goes away mid-stream cancels its generation on the
    // server: 2,000 tokens would take most of a minute; the slot is free at once.
    {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let body = serde_json::json!({
            "model": model, "prompt": LONG_PROMPT, "max_tokens": 2000,
            "temperature": 0, "stream": true,
        })
        .to_string();
        let mut sock = tokio::net::TcpStream::connect(gateway.addr())
            .await
            .unwrap();
        sock.write_all(
            format!(
                "POST /v1/completions HTTP/1.0\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut lines = tokio::io::BufReader::new(sock).lines();
        let mut chunks = 0;
        while chunks < 3 {
            let line = lines.next_line().await.unwrap().expect("a stream");
            if line.starts_with("data: ") {
                chunks += 1;
            }
        }
        assert_eq!(engine.load().active, 1, "generating");
        drop(lines);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while engine.load().active != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the generation goes on after its client left"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // The serving server dies mid-stream: the HTTP stream goes on from the
    // other one, and the text is still the engine's.
    let long = greedy(&engine, Prompt::Text(LONG_PROMPT.into()), LONG_TOKENS).await;
    assert!(
        long.finished.completion_tokens > 40,
        "a long enough generation to kill its server in: {}",
        long.finished.completion_tokens
    );
    let order = mesh_subnet_inference::client::by_load(
        mesh_server::alive_peers::<mesh_subnet_inference::InferenceInfo>(&dht)
            .await
            .unwrap(),
    );
    let victim = order[0].peer_id;
    let index = servers
        .iter()
        .position(|s| s.context().dht.peer_id() == victim)
        .unwrap();
    let doomed = servers.remove(index);
    let (streaming_tx, streaming_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let failover = {
        let python = python.clone();
        let mut env = env.to_vec();
        env.push(("LONG_PROMPT", LONG_PROMPT.to_string()));
        env.push(("LONG_TOKENS", LONG_TOKENS.to_string()));
        tokio::task::spawn_blocking(move || {
            use std::io::{BufRead, BufReader, Write};
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("failover.py");
            std::fs::write(&path, FAILOVER).unwrap();
            let mut child = Command::new(&python)
                .arg(&path)
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            assert_eq!(lines.next().unwrap().unwrap(), "streaming");
            streaming_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            writeln!(child.stdin.take().unwrap(), "go").unwrap();
            let last = lines.next().expect("the script's result").unwrap();
            assert!(child.wait().unwrap().success());
            serde_json::from_str::<Value>(&last).unwrap()
        })
    };
    streaming_rx.await.unwrap();
    // Its network goes away at once, as in a crash.
    doomed.context().dht.clone().shutdown().await;
    go_tx.send(()).unwrap();
    let out = failover.await.unwrap();
    doomed.shutdown().await;
    assert_eq!(
        out["text"],
        long.text.as_str(),
        "one seamless stream: {out}"
    );
    assert_eq!(out["finish"], finish(&long));
    let survivor = servers[0].context().dht.peer_id().to_base58();
    assert_eq!(
        out["mesh"]["servers"],
        serde_json::json!([victim.to_base58(), survivor]),
        "started on the victim, finished on the survivor"
    );

    // The chat page in headless Chromium: type the key and a question, and
    // the streamed answer is the engine's (the page asks greedily for up
    // to 256 tokens), with the server that answered and the speed.
    let page_reference = greedy(
        &engine,
        Prompt::Chat(vec![ChatMessage {
            role: "user".into(),
            content: QUESTION.into(),
        }]),
        256,
    )
    .await;
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mesh-gateway");
    std::fs::create_dir_all(&shots).unwrap();
    let screenshot = shots.join("chat-page.png");
    let page = {
        let python = python.clone();
        let mut env = env.to_vec();
        env.push(("PAGE", format!("http://{}/", gateway.addr())));
        env.push(("SCREENSHOT", screenshot.display().to_string()));
        tokio::task::spawn_blocking(move || run(&python, BROWSER, &env))
    }
    .await
    .unwrap();
    assert_eq!(page["class"], "msg assistant", "{page}");
    assert_eq!(page["text"], page_reference.text.as_str(), "{page}");
    let meta = page["meta"].as_str().unwrap();
    let answered = servers.iter().any(|s| {
        let id = s.context().dht.peer_id().to_base58();
        meta.contains(&id[id.len() - 8..])
    });
    assert!(answered && meta.contains("tokens/s"), "{meta}");
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 1000,
        "a screenshot at {}",
        screenshot.display()
    );

    // No server alive: 503, which the SDK raises as InternalServerError.
    for server in servers {
        server.shutdown().await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let health = http_get(gateway.addr(), "/health").await;
        if health.starts_with("HTTP/1.1 503") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{health}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = Command::new(&python)
        .arg("-c")
        .arg(
            "import os, openai\n\
             c = openai.OpenAI(base_url=os.environ['BASE_URL'], api_key=os.environ['KEY'], max_retries=0)\n\
             try:\n    c.chat.completions.create(model=os.environ['MODEL'], messages=[{'role': 'user', 'content': 'hi'}])\n\
             except openai.APIStatusError as e:\n    print(type(e).__name__, e.status_code)\n",
        )
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "InternalServerError 503",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    gateway.shutdown().await;
    dht.shutdown().await;
}

/// A plain HTTP/1.1 GET; the whole response as text.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    http(addr, "GET", path, KEY).await
}

/// One HTTP/1.1 request without a body; the whole answer, head and body.
async fn http(addr: std::net::SocketAddr, method: &str, path: &str, key: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: gateway\r\nOrigin: http://page.test\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).await.unwrap();
    answer
}

/// Whether an answer from [`http`] allows the test's page origin.
fn allows_page_origin(answer: &str) -> bool {
    answer
        .to_ascii_lowercase()
        .contains("access-control-allow-origin: http://page.test")
}

/// The JSON body of an answer from [`http`].
fn json_body(answer: &str) -> Value {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}
