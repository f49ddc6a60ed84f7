//! The signature authorizer and signed responses on real RPC between libp2p
//! nodes: signed calls pass, forged ones are refused by name and counted,
//! tampered answers are caught by the client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use mesh_core::{KeyType, PeerKey};
use mesh_dht::test_utils::node;
use mesh_dht::{Dht, Multiaddr, PeerId};
use mesh_server::auth::AuthMetrics;
use mesh_server::signature::{unix_ms, Envelope, EnvelopeSigner, SIGNATURE_HEADER};
use mesh_server::{
    connect, incoming, rpc_protocol, signed, AuthLayer, Authorizer, SignResponsesLayer,
    SignatureAuthorizer,
};
use mesh_subnet_echo::proto::echo_client::EchoClient;
use mesh_subnet_echo::proto::echo_server::EchoServer;
use mesh_subnet_echo::proto::{CountRequest, SayRequest};
use mesh_subnet_echo::EchoService;
use tonic::body::Body;
use tonic::transport::Channel;
use tonic::Code;
use tower::{Service, ServiceExt};

const SUBNET: mesh_core::SubnetId = mesh_dht::test_utils::TEST_SUBNET;

#[derive(Clone, Copy, PartialEq)]
enum Responses {
    /// `SignResponsesLayer` outside the authorizers.
    Signed,
    /// No response signing.
    Unsigned,
    /// Signed, then a byte of "hello" changed on the way out.
    Tampered,
}

/// A server node with the echo service behind `layer`.
async fn server(key: PeerKey, layer: AuthLayer, responses: Responses) -> (Dht, Multiaddr) {
    let signing = Arc::new(key.clone());
    let dht = node(key, vec![], false).await;
    let connections = incoming(&mut dht.streams(), rpc_protocol(SUBNET)).unwrap();
    let echo = EchoServer::new(EchoService::default());
    tokio::spawn(async move {
        let builder = tonic::transport::Server::builder();
        match responses {
            Responses::Signed => {
                builder
                    .layer(SignResponsesLayer::new(signing))
                    .layer(layer)
                    .add_service(echo)
                    .serve_with_incoming(connections)
                    .await
            }
            Responses::Unsigned => {
                builder
                    .layer(layer)
                    .add_service(echo)
                    .serve_with_incoming(connections)
                    .await
            }
            Responses::Tampered => {
                let tamper = tower::util::MapResponseLayer::new(
                    |response: http::Response<mesh_server::signature::SignedBody<Body>>| {
                        response.map(|body| {
                            Body::new(body.map_frame(|frame| {
                                frame.map_data(|data: Bytes| {
                                    let mut bytes = data.to_vec();
                                    if let Some(at) = bytes.windows(5).position(|w| w == b"hello") {
                                        bytes[at] = b'j';
                                    }
                                    Bytes::from(bytes)
                                })
                            }))
                        })
                    },
                );
                builder
                    .layer(tamper)
                    .layer(SignResponsesLayer::new(signing))
                    .layer(layer)
                    .add_service(echo)
                    .serve_with_incoming(connections)
                    .await
            }
        }
        .unwrap();
    });
    let addr = dht.listen_addrs().await.unwrap()[0].clone();
    (dht, addr)
}

/// A server (with `configure`d signature authorizer and `responses`) and a
/// client-mode node joined to it, both with keys of `kind`.
struct Setup {
    server: Dht,
    server_id: PeerId,
    client: Dht,
    client_key: Arc<PeerKey>,
    metrics: Arc<AuthMetrics>,
}

async fn setup(
    kind: KeyType,
    configure: impl FnOnce(AuthLayer) -> AuthLayer,
    responses: Responses,
) -> Setup {
    let server_key = PeerKey::generate(kind).unwrap();
    let server_id = server_key.peer_id();
    let layer = configure(signature_layer(server_id));
    let metrics = layer.metrics();
    let (server, addr) = server(server_key, layer, responses).await;
    let client_key = Arc::new(PeerKey::generate(kind).unwrap());
    let client = node((*client_key).clone(), vec![addr], true).await;
    Setup {
        server,
        server_id,
        client,
        client_key,
        metrics,
    }
}

fn signature_layer(server_id: PeerId) -> AuthLayer {
    AuthLayer::new(vec![
        Arc::new(SignatureAuthorizer::new(server_id)) as Arc<dyn Authorizer>
    ])
}

fn channel(client: &Dht, server: PeerId) -> Channel {
    connect(
        client.streams(),
        server,
        rpc_protocol(SUBNET),
        Duration::from_secs(5),
    )
}

fn say(text: &str) -> SayRequest {
    SayRequest {
        text: text.into(),
        delay_ms: 0,
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client channel that sends the envelope `forge(path, body)` makes, with
/// the body it returns: what an attacker or a broken client could send.
fn forging<F>(
    channel: Channel,
    forge: F,
) -> impl tonic::client::GrpcService<Body, Error = BoxError, ResponseBody = Body>
where
    F: Fn(&str, Bytes) -> (Option<Envelope>, Bytes) + Send + Sync + 'static,
{
    let forge = Arc::new(forge);
    tower::service_fn(move |request: http::Request<Body>| {
        let mut channel = channel.clone();
        let forge = forge.clone();
        async move {
            let (mut parts, body) = request.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let (envelope, sent) = forge(parts.uri.path(), bytes);
            if let Some(envelope) = envelope {
                parts
                    .headers
                    .insert(SIGNATURE_HEADER, envelope.to_header_value());
            }
            let request = http::Request::from_parts(parts, Body::new(Full::new(sent)));
            let response = channel.ready().await?.call(request).await?;
            Ok::<_, BoxError>(response)
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_calls_pass_and_their_responses_are_verified() {
    let Setup {
        server,
        server_id,
        client,
        client_key,
        metrics,
    } = setup(KeyType::Ed25519, |l| l, Responses::Signed).await;

    let channel = signed(channel(&client, server_id), client_key.clone(), server_id);
    let mut echo = EchoClient::new(channel);
    let reply = echo.say(say("hello")).await.unwrap().into_inner();
    assert_eq!(reply.text, "hello");
    assert_eq!(reply.caller, client.peer_id().to_base58());

    // A server stream through the signed channel stays a stream.
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
    // The signature came in the trailers and the client checked it.
    let trailers = stream.trailers().await.unwrap();
    let trailers = trailers.expect("trailers");
    assert!(trailers.get_bin(SIGNATURE_HEADER).is_some(), "{trailers:?}");

    // An error answer is trailers-only: signed in its headers, checked, and
    // the caller gets the server's status.
    let status = echo
        .count(CountRequest {
            up_to: 10_001,
            delay_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Concurrent calls on one signed channel.
    let calls = (0..10).map(|i| {
        let mut echo = echo.clone();
        async move {
            echo.say(say(&i.to_string()))
                .await
                .unwrap()
                .into_inner()
                .text
        }
    });
    let texts = futures::future::join_all(calls).await;
    assert_eq!(texts, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(metrics.allowed(), 13);
    assert_eq!(metrics.refused("signature"), 0);
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_requests_are_refused_by_name_and_counted() {
    let Setup {
        server,
        server_id,
        client,
        client_key,
        metrics,
    } = setup(KeyType::Ed25519, |l| l, Responses::Signed).await;
    let me = EnvelopeSigner::new(client_key.clone());

    // Signs `body` at `skew_ms` from now, for `target`, by `signer`, then
    // sends `sent(body)`.
    let envelope_by =
        |signer: EnvelopeSigner, target: PeerId, skew_ms: i64, sent: fn(Bytes) -> Bytes| {
            forging(channel(&client, server_id), move |path, body| {
                let ts = unix_ms().checked_add_signed(skew_ms).unwrap();
                let envelope =
                    Envelope::sign_request(&signer, path, target, ts, rand::random(), &body);
                (Some(envelope), sent(body))
            })
        };
    let same = |b: Bytes| b;
    let mut refused = 0;
    let mut expect_refused = |status: tonic::Status, what: &str| {
        refused += 1;
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        assert!(
            status.message().starts_with("signature: "),
            "{what}: {status:?}"
        );
        assert!(status.message().contains(what), "{what}: {status:?}");
    };

    // The forging channel itself works when it forges nothing.
    let reply = EchoClient::new(envelope_by(me.clone(), server_id, 0, same))
        .say(say("fine"))
        .await
        .unwrap();
    assert_eq!(reply.into_inner().text, "fine");

    // A tampered body: signed over one message, another one sent.
    let tampered = |body: Bytes| {
        let mut bytes = body.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        Bytes::from(bytes)
    };
    let status = EchoClient::new(envelope_by(me.clone(), server_id, 0, tampered))
        .say(say("original"))
        .await
        .unwrap_err();
    expect_refused(status, "does not match the request");

    // The same envelope twice: the second is a replay.
    let kept: Arc<Mutex<Option<Envelope>>> = Arc::default();
    let signer = me.clone();
    let replaying = forging(channel(&client, server_id), move |path, body| {
        let mut kept = kept.lock().unwrap();
        let envelope = kept
            .get_or_insert_with(|| {
                Envelope::sign_request(&signer, path, server_id, unix_ms(), rand::random(), &body)
            })
            .clone();
        (Some(envelope), body)
    });
    let mut replay = EchoClient::new(replaying);
    replay.say(say("once")).await.unwrap();
    let status = replay.say(say("once")).await.unwrap_err();
    expect_refused(status, "replayed request");

    // Clock skew: 61 s either way is refused, 30 s is fine.
    for skew in [-61_000, 61_000] {
        let status = EchoClient::new(envelope_by(me.clone(), server_id, skew, same))
            .say(say("skewed"))
            .await
            .unwrap_err();
        expect_refused(status, "stale envelope: timestamp 61");
    }
    for skew in [-30_000, 30_000] {
        EchoClient::new(envelope_by(me.clone(), server_id, skew, same))
            .say(say("a little skewed"))
            .await
            .unwrap();
    }

    // Aimed at another service key.
    let status = EchoClient::new(envelope_by(me.clone(), PeerId::random(), 0, same))
        .say(say("misdirected"))
        .await
        .unwrap_err();
    expect_refused(status, "not for this server");

    // A valid envelope, but by another key than the caller's.
    let other = EnvelopeSigner::new(Arc::new(PeerKey::generate(KeyType::Ed25519).unwrap()));
    let status = EchoClient::new(envelope_by(other, server_id, 0, same))
        .say(say("borrowed"))
        .await
        .unwrap_err();
    expect_refused(status, "not by the caller");

    // Unsigned.
    let status = EchoClient::new(channel(&client, server_id))
        .say(say("unsigned"))
        .await
        .unwrap_err();
    expect_refused(status, "no mesh-signature-bin envelope");

    // Garbage in the header, sent by hand.
    let status = {
        let mut channel = channel(&client, server_id);
        let mut request =
            http::Request::new(Body::new(Full::new(Bytes::from_static(b"\0\0\0\0\0"))));
        *request.uri_mut() = "http://mesh.peer/mesh.echo.Echo/Say".parse().unwrap();
        *request.method_mut() = http::Method::POST;
        let headers = request.headers_mut();
        headers.insert("content-type", "application/grpc".parse().unwrap());
        headers.insert("te", "trailers".parse().unwrap());
        headers.insert(SIGNATURE_HEADER, "bm90IGFuIGVudmVsb3Bl".parse().unwrap());
        let response = channel.ready().await.unwrap().call(request).await.unwrap();
        tonic::Status::from_header_map(response.headers()).expect("a trailers-only refusal")
    };
    expect_refused(status, "malformed envelope");

    assert_eq!(metrics.refused("signature"), refused);
    assert_eq!(metrics.allowed(), 4, "fine, once, and the two 30 s skews");
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_refuses_unsigned_and_tampered_responses() {
    let client_key = Arc::new(PeerKey::generate(KeyType::Ed25519).unwrap());
    for responses in [Responses::Unsigned, Responses::Tampered] {
        let server_key = PeerKey::generate(KeyType::Ed25519).unwrap();
        let server_id = server_key.peer_id();
        let (server, addr) = server(server_key, signature_layer(server_id), responses).await;
        let client = node((*client_key).clone(), vec![addr], true).await;
        let mut echo = EchoClient::new(signed(
            channel(&client, server_id),
            client_key.clone(),
            server_id,
        ));
        let status = echo.say(say("hello")).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(
            status.message().starts_with("signature: response "),
            "{status:?}"
        );
        let what = if responses == Responses::Tampered {
            "tampered response"
        } else {
            "unsigned"
        };
        assert!(status.message().contains(what), "{status:?}");
        // An unsigned error is passed on as the server said it: refusals
        // cost the server no signature, and an error proves nothing.
        if responses == Responses::Unsigned {
            let status = echo
                .count(CountRequest {
                    up_to: 10_001,
                    delay_ms: 0,
                })
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        }
        client.shutdown().await;
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_keys_sign_and_verify_both_ways() {
    let Setup {
        server,
        server_id,
        client,
        client_key,
        metrics,
    } = setup(KeyType::Rsa, |l| l, Responses::Signed).await;
    let mut echo = EchoClient::new(signed(
        channel(&client, server_id),
        client_key.clone(),
        server_id,
    ));
    let reply = echo.say(say("rsa")).await.unwrap().into_inner();
    assert_eq!(reply.caller, client_key.peer_id().to_base58());
    assert_eq!(metrics.allowed(), 1);
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_refused() {
    let Setup {
        server,
        server_id,
        client,
        client_key,
        metrics,
    } = setup(
        KeyType::Ed25519,
        |l| l.with_max_body_bytes(64),
        Responses::Signed,
    )
    .await;
    let mut echo = EchoClient::new(signed(
        channel(&client, server_id),
        client_key.clone(),
        server_id,
    ));
    echo.say(say("short")).await.unwrap();
    let status = echo.say(say(&"x".repeat(100))).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("signature: the request body is over 64 bytes"),
        "{status:?}"
    );
    assert_eq!(metrics.refused("signature"), 1);

    // The client refuses to sign more than its own limit.
    let mut small = EchoClient::new(
        signed(channel(&client, server_id), client_key, server_id).with_max_body_bytes(16),
    );
    let status = small.say(say(&"x".repeat(100))).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("signature: request body over 16 bytes"),
        "{status:?}"
    );
    assert_eq!(metrics.refused("signature"), 1, "never sent");
    client.shutdown().await;
    server.shutdown().await;
}

/// With the authorizers `mesh-server` uses (`standard_authorizers`: the
/// stake authorizer in front of the signature authorizer), callers that are not staked are refused
/// before their signatures are checked: however many fresh PeerIds call,
/// none of their nonces is remembered, so they cannot fill the cache that
/// staked callers need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstaked_callers_never_reach_the_nonce_cache() {
    use mesh_dht::test_utils::FixedOracle;
    use mesh_server::StakeAuthorizer;

    let server_key = PeerKey::generate(KeyType::Ed25519).unwrap();
    let staked_key = Arc::new(PeerKey::generate(KeyType::Ed25519).unwrap());
    let oracle = FixedOracle::new([staked_key.peer_id()]);
    let layer = AuthLayer::new(mesh_server::standard_authorizers(
        server_key.peer_id(),
        Some(StakeAuthorizer::from_gate(oracle.gate())),
    ));
    let metrics = layer.metrics();
    let server_id = server_key.peer_id();
    let (server, addr) = server(server_key, layer, Responses::Signed).await;
    let say = |dht: &Dht, key: Arc<PeerKey>, text: &str| {
        let channel = connect(
            dht.streams(),
            server_id,
            rpc_protocol(SUBNET),
            Duration::from_secs(5),
        );
        let request = SayRequest {
            text: text.into(),
            delay_ms: 0,
        };
        async move {
            EchoClient::new(signed(channel, key, server_id))
                .say(request)
                .await
        }
    };

    let mut strangers = Vec::new();
    for _ in 0..12 {
        let key = Arc::new(PeerKey::generate(KeyType::Ed25519).unwrap());
        let dht = node((*key).clone(), vec![addr.clone()], true).await;
        for i in 0..3 {
            let status = say(&dht, key.clone(), &format!("let me in {i}"))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
            assert!(status.message().starts_with("stake: "), "{status:?}");
        }
        strangers.push(dht);
    }
    // The signature authorizer never ran for them: nothing it would have
    // remembered or refused.
    assert_eq!(metrics.refused("stake"), 36);
    assert_eq!(metrics.refused("signature"), 0);
    assert_eq!(metrics.allowed(), 0);

    let staked = node((*staked_key).clone(), vec![addr], true).await;
    for i in 0..2 {
        let reply = say(&staked, staked_key.clone(), &format!("hello {i}"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.caller, staked_key.peer_id().to_base58());
    }
    assert_eq!(metrics.allowed(), 2);
    // An unsigned call from the staked peer is still refused by the
    // signature authorizer behind the stake check.
    let status = mesh_subnet_echo::proto::echo_client::EchoClient::new(connect(
        staked.streams(),
        server_id,
        rpc_protocol(SUBNET),
        Duration::from_secs(5),
    ))
    .say(SayRequest {
        text: "unsigned".into(),
        delay_ms: 0,
    })
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(metrics.refused("signature"), 1);
    for n in strangers.iter().chain([&staked, &server]) {
        n.shutdown().await;
    }
}

/// A gRPC request whose body sends five bytes of a frame header and then
/// nothing, as a slow (or malicious) caller would.
async fn stalled_call(channel: Channel) -> (http::Response<Body>, std::time::Instant) {
    let stalled = futures::stream::once(async {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(&[
            0, 0, 0, 0, 16,
        ])))
    })
    .chain(futures::stream::pending());
    let request = http::Request::builder()
        .method("POST")
        .uri("http://mesh.peer/mesh.echo.Echo/Say")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Body::new(http_body_util::StreamBody::new(stalled)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut channel = channel;
    let response = channel.ready().await.unwrap().call(request).await.unwrap();
    (response, started)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_time_out_and_calls_in_flight_are_bounded() {
    let Setup {
        server,
        server_id,
        client,
        client_key,
        metrics,
    } = setup(
        KeyType::Ed25519,
        |l| {
            l.with_body_timeout(Duration::from_secs(1))
                .with_max_in_flight(2)
        },
        Responses::Signed,
    )
    .await;
    // Two callers that never finish their bodies hold both places.
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(stalled_call(channel(&client, server_id))))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut echo = EchoClient::new(signed(
        channel(&client, server_id),
        client_key.clone(),
        server_id,
    ));
    // A third call is refused at once, unsigned, and the client passes the
    // server's status on.
    let status = echo.say(say("busy?")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("in_flight: the server is busy: 2 calls"),
        "{status:?}"
    );
    // The stalled bodies are given up on after the body timeout.
    for call in slow {
        let (response, started) = call.await.unwrap();
        let status = tonic::Status::from_header_map(response.headers()).expect("a status");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(
            status
                .message()
                .starts_with("signature: the request body did not arrive within 1.0 s"),
            "{status:?}"
        );
        assert!(
            response.headers().get(SIGNATURE_HEADER).is_none(),
            "a refusal is not signed"
        );
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    }
    // Then the server serves again, signed.
    let reply = echo.say(say("hello")).await.unwrap().into_inner();
    assert_eq!(reply.text, "hello");
    assert_eq!(metrics.refused("in_flight"), 1);
    assert_eq!(metrics.refused("signature"), 2);
    assert_eq!(metrics.allowed(), 1);
    client.shutdown().await;
    server.shutdown().await;
}
