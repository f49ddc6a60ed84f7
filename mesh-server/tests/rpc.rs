//! Typed RPC between real libp2p nodes: caller identity, unary and streaming
//! calls, deadlines, cancellation, an unreachable peer.

use std::time::Duration;

use futures::StreamExt;
use mesh_core::{KeyType, PeerKey};
use mesh_dht::{Dht, PeerId};
use mesh_server::{connect, incoming, rpc_protocol};
use mesh_subnet_echo::proto::echo_client::EchoClient;
use mesh_subnet_echo::proto::echo_server::EchoServer;
use mesh_subnet_echo::proto::{CountRequest, SayRequest};
use mesh_subnet_echo::EchoService;
use tokio_util::sync::CancellationToken;
use tonic::Code;

async fn node(initial_peers: Vec<mesh_dht::Multiaddr>, client_mode: bool) -> Dht {
    let key = PeerKey::generate(KeyType::Ed25519).unwrap();
    mesh_dht::test_utils::node(key, initial_peers, client_mode).await
}

/// A server node serving the echo service, and a client node joined to it.
async fn pair() -> (Dht, Dht, CancellationToken) {
    let (server, client, stop, _) = pair_with_service().await;
    (server, client, stop)
}

async fn pair_with_service() -> (Dht, Dht, CancellationToken, EchoService) {
    let service = EchoService::default();
    let server = node(vec![], false).await;
    let protocol = rpc_protocol(mesh_dht::test_utils::TEST_SUBNET);
    let connections = incoming(&mut server.streams(), protocol).unwrap();
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let served = service.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(served))
            .serve_with_incoming_shutdown(connections, signal.cancelled_owned())
            .await
            .unwrap();
    });
    let addr = server
        .listen_addrs()
        .await
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    let client = node(vec![addr], true).await;
    (server, client, stop, service)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_streaming_calls_know_the_caller() {
    let (server, client, stop) = pair().await;
    let channel = connect(
        client.streams(),
        server.peer_id(),
        rpc_protocol(mesh_dht::test_utils::TEST_SUBNET),
        Duration::from_secs(5),
    );
    let mut echo = EchoClient::new(channel);
    let reply = echo
        .say(SayRequest {
            text: "hello".into(),
            delay_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.text, "hello");
    assert_eq!(
        reply.caller,
        client.peer_id().to_base58(),
        "the server saw the client's PeerId"
    );

    let mut stream = echo
        .count(CountRequest {
            up_to: 5,
            delay_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(item) = stream.next().await {
        got.push(item.unwrap().n);
    }
    assert_eq!(got, vec![1, 2, 3, 4, 5]);

    // Many calls share the one channel concurrently.
    let calls = (0..20).map(|i| {
        let mut echo = echo.clone();
        async move {
            echo.say(SayRequest {
                text: i.to_string(),
                delay_ms: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .text
        }
    });
    let texts = futures::future::join_all(calls).await;
    assert_eq!(texts, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());

    let status = echo
        .count(CountRequest {
            up_to: 10_001,
            delay_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    stop.cancel();
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_and_cancellation() {
    let (server, client, stop, service) = pair_with_service().await;
    let channel = connect(
        client.streams(),
        server.peer_id(),
        rpc_protocol(mesh_dht::test_utils::TEST_SUBNET),
        Duration::from_secs(5),
    );
    let mut echo = EchoClient::new(channel);

    // A deadline shorter than the handler takes: the call ends at the deadline.
    let mut request = tonic::Request::new(SayRequest {
        text: "slow".into(),
        delay_ms: 3_000,
    });
    request.set_timeout(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let status = echo
        .say(request)
        .await
        .expect_err("the deadline passes first");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "ended at the deadline: {:?}",
        started.elapsed()
    );

    // Dropping a stream mid-way cancels it; the channel keeps working.
    let mut stream = echo
        .count(CountRequest {
            up_to: 1_000,
            delay_ms: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.next().await.unwrap().unwrap().n, 1);
    drop(stream);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while service.cancelled_streams() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not notice the cancellation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = echo
        .say(SayRequest {
            text: "still here".into(),
            delay_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.text, "still here");
    stop.cancel();
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_is_unavailable() {
    let client = node(vec![], false).await;
    let nobody = PeerId::random();
    let channel = connect(
        client.streams(),
        nobody,
        rpc_protocol(mesh_dht::test_utils::TEST_SUBNET),
        Duration::from_secs(2),
    );
    let status = EchoClient::new(channel)
        .say(SayRequest {
            text: "anyone?".into(),
            delay_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // A peer that is reachable but serves no RPC: also Unavailable.
    let plain = node(vec![], false).await; // serves no RPC protocol at all
    let addr = plain.listen_addrs().await.unwrap()[0].clone();
    let joined = node(vec![addr], true).await;
    let channel = connect(
        joined.streams(),
        plain.peer_id(),
        rpc_protocol(mesh_dht::test_utils::TEST_SUBNET),
        Duration::from_secs(2),
    );
    let status = EchoClient::new(channel)
        .say(SayRequest {
            text: "hi".into(),
            delay_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    for n in [client, plain, joined] {
        n.shutdown().await;
    }
}

/// Many calls that each open their own connection (one libp2p stream each,
/// as a gateway's concurrent users do) all arrive at the same moment: every
/// one is served. The server must take inbound streams in bursts, not one
/// at a time (a stream the server could not take at once used to be reset,
/// so the caller saw "connection closed").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_new_connections_is_served() {
    let (server, client, stop) = pair().await;
    let protocol = rpc_protocol(mesh_dht::test_utils::TEST_SUBNET);
    for round in 0..3 {
        let calls = (0..48).map(|i| {
            let channel = connect(
                client.streams(),
                server.peer_id(),
                protocol.clone(),
                Duration::from_secs(5),
            );
            async move {
                let mut stream = EchoClient::new(channel)
                    .count(CountRequest {
                        up_to: 3,
                        delay_ms: 5,
                    })
                    .await
                    .map_err(|s| format!("call {i}: {s}"))?
                    .into_inner();
                let mut got = Vec::new();
                while let Some(item) = stream
                    .message()
                    .await
                    .map_err(|s| format!("call {i}: {s}"))?
                {
                    got.push(item.n);
                }
                Ok::<_, String>(got)
            }
        });
        let results = futures::future::join_all(calls).await;
        let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(
            failed.is_empty(),
            "round {round}: {} of 48 calls failed: {failed:?}",
            failed.len()
        );
        for r in results {
            assert_eq!(r.unwrap(), vec![1, 2, 3]);
        }
    }
    stop.cancel();
    client.shutdown().await;
    server.shutdown().await;
}

/// An inbound connection that opens and says nothing (or too little) is
/// dropped after the time to its first bytes; a caller that starts its
/// request at once may then sit idle as long as it likes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_no_request_is_dropped() {
    use mesh_server::incoming_with_timeout;
    use tokio::io::AsyncReadExt;

    let server = node(vec![], false).await;
    let protocol = rpc_protocol(mesh_dht::test_utils::TEST_SUBNET);
    let mut connections = incoming_with_timeout(
        &mut server.streams(),
        protocol.clone(),
        Duration::from_millis(500),
    )
    .unwrap();
    let addr = server.listen_addrs().await.unwrap()[0].clone();
    let client = node(vec![addr], true).await;

    // Silent: the server's read fails once the time is up.
    let _silent = client
        .streams()
        .open_stream(server.peer_id(), protocol.clone())
        .await
        .unwrap();
    let mut io = connections.next().await.unwrap().unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let err = io.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    // A prompt start, then quiet: no timeout.
    let mut talker = client
        .streams()
        .open_stream(server.peer_id(), protocol)
        .await
        .unwrap();
    futures::AsyncWriteExt::write_all(&mut talker, &[7u8; mesh_server::rpc::FIRST_BYTES])
        .await
        .unwrap();
    futures::AsyncWriteExt::flush(&mut talker).await.unwrap();
    let mut io = connections.next().await.unwrap().unwrap();
    let mut got = 0;
    while got < mesh_server::rpc::FIRST_BYTES {
        got += io.read(&mut buf).await.unwrap();
    }
    let quiet = tokio::time::timeout(Duration::from_secs(1), io.read(&mut buf)).await;
    assert!(quiet.is_err(), "still open and waiting after the deadline");
    client.shutdown().await;
    server.shutdown().await;
}
