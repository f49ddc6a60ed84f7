//! Signed envelopes on requests and responses: the signature authorizer.
//!
//! Noise already authenticates the transport: a handler knows which PeerId
//! is on the other end of the libp2p stream ([`crate::rpc::caller`]). The
//! envelope adds what the transport does not give, like the Python mesh's
//! signature authorizer does:
//!
//! - **replay protection**: every request carries a fresh 16-byte nonce; a
//!   server refuses a nonce it has seen from the same signer;
//! - **freshness**: the envelope's timestamp must be within 60 s
//!   (configurable) of the server's clock, which also bounds how long nonces
//!   must be remembered;
//! - **target binding**: a request names the PeerId of the server it is for,
//!   so a request cannot be replayed to another service key;
//! - **end-to-end signed responses**: the server signs what it answered,
//!   bound to the request's nonce and to the caller, so a client can prove
//!   (and keep) what a peer said.
//!
//! # The envelope
//!
//! Carried in the gRPC binary metadata header `mesh-signature-bin` (base64,
//! as gRPC does for `-bin` headers), as a fixed, length-checked layout:
//!
//! ```text
//! version     u8      = 1
//! key_len     u16 BE  (at most 1024), then the signer's public key in
//!                     libp2p's protobuf encoding (Ed25519 or RSA)
//! timestamp   u64 BE  unix milliseconds
//! nonce       16 bytes
//! target_len  u8      (at most 128), then the target PeerId's bytes
//! sig_len     u16 BE  (at most 1024), then the signature
//! ```
//!
//! The signature ([`mesh_core::PeerKey::sign`]: Ed25519, or RSA-PSS over
//! SHA-256) covers
//!
//! ```text
//! domain ‖ 0x00 ‖ u32 BE path length ‖ path ‖ u8 target length ‖ target
//!        ‖ u64 BE timestamp ‖ nonce ‖ SHA-256(body)
//! ```
//!
//! - requests: domain `mesh/rpc/request/1`, the method path, the server's
//!   PeerId as target, and the full gRPC-framed request body;
//! - responses: domain `mesh/rpc/response/1`, the method path, the
//!   *caller's* PeerId as target, the *request's* nonce (binding the answer
//!   to the question) and the full gRPC-framed response body. The response
//!   envelope goes in the gRPC trailers, so server streams stay streams; a
//!   trailers-only response (a refusal, an error) carries it in its headers,
//!   over an empty body.
//!
//! # Parts
//!
//! - [`SignatureAuthorizer`]: the server-side check, an [`Authorizer`] named
//!   `"signature"` that composes in an [`crate::AuthLayer`] with the others
//!   (its refusals read `signature: …` and are counted in
//!   [`crate::auth::AuthMetrics`]);
//! - [`SignResponsesLayer`]: signs every response of a server; put it
//!   outside the `AuthLayer` so refusals are signed too;
//! - [`signed`] / [`SignedChannel`]: the client side, a channel that signs
//!   requests and verifies responses, for generated clients
//!   (`EchoClient::new(signed(channel, key, peer))`). A response whose
//!   signature is missing or wrong fails with `Code::Unauthenticated`,
//!   `signature: response …`.
//!
//! Requests are buffered to be hashed (at most 4 MiB by default): unary and
//! server-streaming calls work as usual, a client-streaming call sends its
//! messages when its stream ends. Server-stream messages reach the caller as
//! they arrive; the stream's end (its trailers) is where a bad signature
//! shows, as the stream's last item, an error. A unary reply is only
//! returned once its signature is checked.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use libp2p::PeerId;
use mesh_core::{PeerKey, PublicKey};
use sha2::{Digest, Sha256};
use tonic::body::Body;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::auth::{AuthFuture, Authorizer, CallInfo, Refusal, DEFAULT_MAX_BODY_BYTES};
use crate::rpc::Caller;

mod authorizer;
mod channel;
mod envelope;
mod response;

pub use authorizer::*;
pub use channel::*;
pub use envelope::*;
pub use response::*;

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::KeyType;

    fn signer(kind: KeyType) -> EnvelopeSigner {
        EnvelopeSigner::new(Arc::new(PeerKey::generate(kind).unwrap()))
    }

    fn request_envelope(s: &EnvelopeSigner, target: PeerId, body: &[u8]) -> Envelope {
        Envelope::sign_request(s, "/mesh.echo.Echo/Say", target, unix_ms(), [7; 16], body)
    }

    #[test]
    fn envelopes_round_trip_and_verify_with_ed25519_and_rsa() {
        for kind in [KeyType::Ed25519, KeyType::Rsa] {
            let s = signer(kind);
            let target = PeerId::random();
            let e = request_envelope(&s, target, b"body");
            let decoded = Envelope::decode(&e.encode()).unwrap();
            assert_eq!(decoded, e, "{kind}");
            let mut headers = HeaderMap::new();
            headers.insert(SIGNATURE_HEADER, e.to_header_value());
            assert_eq!(Envelope::from_headers(&headers).unwrap(), e);
            let public = decoded.public_key().unwrap();
            assert_eq!(public.to_peer_id(), s.peer_id());
            assert!(decoded.verify_request(&public, "/mesh.echo.Echo/Say", b"body"));
            assert!(!decoded.verify_request(&public, "/mesh.echo.Echo/Say", b"bodz"));
            assert!(!decoded.verify_request(&public, "/mesh.echo.Echo/Count", b"body"));
            // A request signature is no response signature.
            assert!(!decoded.verify_response(&public, "/mesh.echo.Echo/Say", &body_hash(b"body")));
            let mut later = decoded.clone();
            later.timestamp_ms += 1;
            assert!(!later.verify_request(&public, "/mesh.echo.Echo/Say", b"body"));
            let mut elsewhere = decoded;
            elsewhere.target = PeerId::random();
            assert!(!elsewhere.verify_request(&public, "/mesh.echo.Echo/Say", b"body"));
        }
    }

    #[test]
    fn malformed_envelopes_give_typed_errors() {
        let s = signer(KeyType::Ed25519);
        let bytes = request_envelope(&s, PeerId::random(), b"x").encode();
        assert!(matches!(
            Envelope::decode(&[]),
            Err(EnvelopeError::Truncated {
                field: "version",
                ..
            })
        ));
        // Every strict prefix is truncated, never a panic or a success.
        for n in 0..bytes.len() {
            assert!(
                matches!(
                    Envelope::decode(&bytes[..n]),
                    Err(EnvelopeError::Truncated { .. })
                ),
                "prefix of {n} bytes: {:?}",
                Envelope::decode(&bytes[..n])
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Envelope::decode(&longer), Err(EnvelopeError::Trailing(1)));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(Envelope::decode(&v2), Err(EnvelopeError::Version(2)));

        // An oversized key is refused before it is read.
        let mut big = request_envelope(&s, PeerId::random(), b"x");
        big.public_key = vec![1; 2_000];
        assert_eq!(
            Envelope::decode(&big.encode()),
            Err(EnvelopeError::TooLong {
                field: "key",
                len: 2_000,
                max: MAX_KEY_LEN
            })
        );
        let mut big_sig = request_envelope(&s, PeerId::random(), b"x");
        big_sig.signature = vec![1; 1_025];
        assert!(matches!(
            Envelope::decode(&big_sig.encode()),
            Err(EnvelopeError::TooLong {
                field: "signature",
                ..
            })
        ));
        // Garbage where the key should be decodes, but is no key.
        let mut garbage = request_envelope(&s, PeerId::random(), b"x");
        garbage.public_key = vec![0xff; 40];
        let decoded = Envelope::decode(&garbage.encode()).unwrap();
        assert!(matches!(decoded.public_key(), Err(EnvelopeError::Key(_))));
        // A target that is no PeerId.
        let mut bad_target = bytes.clone();
        let key_len = usize::from(u16::from_be_bytes([bytes[1], bytes[2]]));
        let target_at = 3 + key_len + 8 + NONCE_LEN + 1;
        bad_target[target_at] = 0x77;
        assert!(matches!(
            Envelope::decode(&bad_target),
            Err(EnvelopeError::Target(_))
        ));
        // Headers: missing, not base64, random bytes.
        let mut headers = HeaderMap::new();
        assert_eq!(
            Envelope::from_headers(&headers),
            Err(EnvelopeError::Missing)
        );
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_static("***"));
        assert_eq!(
            Envelope::from_headers(&headers),
            Err(EnvelopeError::NotBase64)
        );
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_static("AAAA"));
        assert!(Envelope::from_headers(&headers).is_err());
        // Padded base64 (what other gRPC stacks may send) is read too.
        let padded = base64::engine::general_purpose::STANDARD.encode(&bytes);
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(&padded).unwrap());
        assert!(Envelope::from_headers(&headers).is_ok());
    }

    fn call(caller: PeerId, envelope: &Envelope, body: &[u8]) -> CallInfo {
        let mut call = CallInfo::new(Some(caller), "/mesh.echo.Echo/Say");
        call.headers
            .insert(SIGNATURE_HEADER, envelope.to_header_value());
        call.body = Some(Bytes::copy_from_slice(body));
        call
    }

    #[test]
    fn the_authorizer_checks_each_part_and_forgets_expired_nonces() {
        for kind in [KeyType::Ed25519, KeyType::Rsa] {
            let client = signer(kind);
            let server = PeerId::random();
            let auth = SignatureAuthorizer::new(server).with_max_nonces(2);
            let t0 = Instant::now();
            let e = request_envelope(&client, server, b"body");
            let now = e.timestamp_ms;
            auth.check(&call(client.peer_id(), &e, b"body"), now, t0)
                .unwrap();
            let replay = auth
                .check(&call(client.peer_id(), &e, b"body"), now, t0)
                .unwrap_err();
            assert!(replay.reason.contains("replayed"), "{replay:?}");
            // Tampered: not remembered, so the genuine body still passes once.
            let fresh = Envelope::sign_request(
                &client,
                "/mesh.echo.Echo/Say",
                server,
                now,
                [8; 16],
                b"body",
            );
            let tampered = auth
                .check(&call(client.peer_id(), &fresh, b"bodY"), now, t0)
                .unwrap_err();
            assert!(tampered.reason.contains("does not match"), "{tampered:?}");
            auth.check(&call(client.peer_id(), &fresh, b"body"), now, t0)
                .unwrap();
            assert_eq!(auth.remembered_nonces(), 2);
            // Full: refused until the first ones expire (2 × 60 s).
            let third = Envelope::sign_request(
                &client,
                "/mesh.echo.Echo/Say",
                server,
                now,
                [9; 16],
                b"body",
            );
            let full = auth
                .check(&call(client.peer_id(), &third, b"body"), now, t0)
                .unwrap_err();
            assert_eq!(full.code, Code::ResourceExhausted, "{full:?}");
            auth.check(
                &call(client.peer_id(), &third, b"body"),
                now,
                t0 + Duration::from_secs(121),
            )
            .unwrap();
            assert_eq!(auth.remembered_nonces(), 1);
        }
    }

    #[test]
    fn one_signer_cannot_fill_the_nonce_cache() {
        let (greedy, other) = (signer(KeyType::Ed25519), signer(KeyType::Ed25519));
        let server = PeerId::random();
        let auth = SignatureAuthorizer::new(server)
            .with_max_nonces(10)
            .with_max_nonces_per_signer(3);
        let t0 = Instant::now();
        let now = unix_ms();
        let sign = |who: &EnvelopeSigner, nonce: u8| {
            Envelope::sign_request(who, "/mesh.echo.Echo/Say", server, now, [nonce; 16], b"b")
        };
        for n in 0..3 {
            auth.check(&call(greedy.peer_id(), &sign(&greedy, n), b"b"), now, t0)
                .unwrap();
        }
        let refused = auth
            .check(&call(greedy.peer_id(), &sign(&greedy, 3), b"b"), now, t0)
            .unwrap_err();
        assert_eq!(refused.code, Code::ResourceExhausted, "{refused:?}");
        assert!(refused.reason.contains("quota of nonces"), "{refused:?}");
        assert_eq!(auth.remembered_nonces(), 3);
        // Everyone else is still served, and the greedy signer again once
        // its nonces expire.
        for n in 0..3 {
            auth.check(&call(other.peer_id(), &sign(&other, n), b"b"), now, t0)
                .unwrap();
        }
        auth.check(
            &call(greedy.peer_id(), &sign(&greedy, 3), b"b"),
            now,
            t0 + Duration::from_secs(121),
        )
        .unwrap();
        assert_eq!(auth.remembered_nonces(), 1);
    }

    #[test]
    fn the_authorizer_refuses_other_callers_targets_and_stale_clocks() {
        let client = signer(KeyType::Ed25519);
        let server = PeerId::random();
        let auth = SignatureAuthorizer::new(server);
        let t0 = Instant::now();
        let now = unix_ms();
        let path = "/mesh.echo.Echo/Say";
        let at = |skew_ms: i64, nonce: u8| {
            let ts = now.checked_add_signed(skew_ms).unwrap();
            Envelope::sign_request(&client, path, server, ts, [nonce; 16], b"b")
        };
        let refused =
            |e: &Envelope, caller: PeerId| auth.check(&call(caller, e, b"b"), now, t0).unwrap_err();
        let other = refused(&at(0, 1), PeerId::random());
        assert!(other.reason.contains("not by the caller"), "{other:?}");
        let elsewhere = Envelope::sign_request(&client, path, PeerId::random(), now, [2; 16], b"b");
        let r = refused(&elsewhere, client.peer_id());
        assert!(r.reason.contains("not for this server"), "{r:?}");
        for skew in [-61_000, 61_000] {
            let r = refused(&at(skew, 3), client.peer_id());
            assert!(
                r.reason.starts_with("stale envelope: timestamp 61.0 s"),
                "{r:?}"
            );
        }
        for (skew, nonce) in [(-30_000, 4), (30_000, 5), (60_000, 6)] {
            auth.check(&call(client.peer_id(), &at(skew, nonce), b"b"), now, t0)
                .unwrap();
        }
        let mut no_caller = call(client.peer_id(), &at(0, 7), b"b");
        no_caller.caller = None;
        assert!(auth.check(&no_caller, now, t0).is_err());
        assert!(auth
            .check(&CallInfo::new(Some(client.peer_id()), path), now, t0)
            .unwrap_err()
            .reason
            .contains("unsigned"));
    }

    fn expected(server: &EnvelopeSigner, me: PeerId) -> Expected {
        Expected {
            path: "/mesh.echo.Echo/Count".into(),
            nonce: [3; 16],
            server: server.peer_id(),
            me,
            max_skew: DEFAULT_MAX_SKEW,
        }
    }

    /// A response body of `data` then `trailers`, through [`VerifiedBody`].
    async fn verified(
        expected: Expected,
        data: &[&[u8]],
        trailers: HeaderMap,
    ) -> Result<(), Status> {
        let mut frames: Vec<Result<Frame<Bytes>, Status>> = data
            .iter()
            .map(|d| Ok(Frame::data(Bytes::copy_from_slice(d))))
            .collect();
        frames.push(Ok(Frame::trailers(trailers)));
        let inner = Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )));
        let body = VerifiedBody {
            inner,
            check: Some(Box::new(ResponseCheck {
                expected,
                hasher: Sha256::new(),
            })),
        };
        body.collect().await.map(|_| ())
    }

    fn trailers(envelope: &Envelope) -> HeaderMap {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        t.insert(SIGNATURE_HEADER, envelope.to_header_value());
        t
    }

    #[tokio::test]
    async fn forged_response_trailers_are_detected() {
        for kind in [KeyType::Ed25519, KeyType::Rsa] {
            let server = signer(kind);
            let me = PeerId::random();
            let data: [&[u8]; 2] = [b"\0\0\0\0\x02\x08\x01", b"\0\0\0\0\x02\x08\x02"];
            let whole: Vec<u8> = data.concat();
            let sign = |s: &EnvelopeSigner, to: PeerId, nonce: Nonce, body: &[u8]| {
                Envelope::sign_response(
                    s,
                    "/mesh.echo.Echo/Count",
                    to,
                    unix_ms(),
                    nonce,
                    &body_hash(body),
                )
            };
            let good = sign(&server, me, [3; 16], &whole);
            verified(expected(&server, me), &data, trailers(&good))
                .await
                .unwrap();
            // The data changed on the way.
            let status = verified(
                expected(&server, me),
                &[data[0], b"\0\0\0\0\x02\x08\x09"],
                trailers(&good),
            )
            .await
            .unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated);
            assert!(
                status.message().starts_with("signature: response "),
                "{status:?}"
            );
            assert!(status.message().contains("tampered"), "{status:?}");
            // Signed by someone else, for someone else, for another request.
            let other = signer(KeyType::Ed25519);
            for (forged, what) in [
                (sign(&other, me, [3; 16], &whole), "not by the called peer"),
                (
                    sign(&server, PeerId::random(), [3; 16], &whole),
                    "not for this caller",
                ),
                (
                    sign(&server, me, [4; 16], &whole),
                    "answers another request",
                ),
            ] {
                let status = verified(expected(&server, me), &data, trailers(&forged))
                    .await
                    .unwrap_err();
                assert!(status.message().contains(what), "{what}: {status:?}");
            }
            // Stale.
            let old = Envelope::sign_response(
                &server,
                "/mesh.echo.Echo/Count",
                me,
                unix_ms() - 61_000,
                [3; 16],
                &body_hash(&whole),
            );
            let status = verified(expected(&server, me), &data, trailers(&old))
                .await
                .unwrap_err();
            assert!(status.message().contains("stale"), "{status:?}");
            // No signature at all.
            let mut unsigned = HeaderMap::new();
            unsigned.insert("grpc-status", HeaderValue::from_static("0"));
            let status = verified(expected(&server, me), &data, unsigned)
                .await
                .unwrap_err();
            assert!(status.message().contains("unsigned"), "{status:?}");
        }
    }

    #[tokio::test]
    async fn responses_are_signed_in_trailers_or_in_trailers_only_headers() {
        let server = signer(KeyType::Ed25519);
        let me = PeerId::random();
        let binding = ResponseBinding {
            path: "/mesh.echo.Echo/Count".into(),
            nonce: [3; 16],
            caller: me,
        };
        let data: Vec<Result<Frame<Bytes>, Status>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::from_static(b"cd"))),
        ];
        // The inner body ends without trailers: the signature comes in some.
        let body = SignedBody {
            inner: http_body_util::StreamBody::new(futures::stream::iter(data)),
            pending: Some(Box::new(PendingSignature {
                signer: server.clone(),
                binding,
                hasher: Sha256::new(),
            })),
        };
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap();
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"abcd"));
        expected(&server, me)
            .check(&trailers, &body_hash(b"abcd"), unix_ms())
            .unwrap();
        assert!(expected(&server, me)
            .check(&trailers, &body_hash(b"abce"), unix_ms())
            .is_err());
    }
}
