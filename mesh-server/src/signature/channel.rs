//! Client: a channel that signs requests and verifies the responses.

use super::*;

/// A channel to `target` that signs requests with `key` and verifies the
/// responses are `target`'s (module docs). Use it as a generated client's
/// channel: `EchoClient::new(signed(channel, key, peer))`.
pub fn signed(channel: Channel, key: Arc<PeerKey>, target: PeerId) -> SignedChannel {
    SignedChannel {
        inner: channel,
        signer: EnvelopeSigner::new(key),
        target,
        max_skew: DEFAULT_MAX_SKEW,
        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
    }
}

/// See [`signed`].
#[derive(Clone, Debug)]
pub struct SignedChannel {
    inner: Channel,
    signer: EnvelopeSigner,
    target: PeerId,
    max_skew: Duration,
    max_body_bytes: usize,
}

impl SignedChannel {
    /// Accept response timestamps within `max_skew` of this clock (60 s).
    pub fn with_max_skew(mut self, max_skew: Duration) -> Self {
        self.max_skew = max_skew;
        self
    }

    /// Refuse to send request bodies over this many bytes (4 MiB).
    pub fn with_max_body_bytes(mut self, max_body_bytes: usize) -> Self {
        self.max_body_bytes = max_body_bytes;
        self
    }

    /// The peer this channel calls.
    pub fn target(&self) -> PeerId {
        self.target
    }
}

/// What a response must be signed over.
#[derive(Clone, Debug)]
pub(super) struct Expected {
    pub(super) path: String,
    pub(super) nonce: Nonce,
    pub(super) server: PeerId,
    pub(super) me: PeerId,
    pub(super) max_skew: Duration,
}

pub(super) fn response_refusal(reason: impl std::fmt::Display) -> Status {
    Status::unauthenticated(format!("signature: response {reason}"))
}

impl Expected {
    /// Checks the response envelope in `map` (headers or trailers).
    pub(super) fn check(
        &self,
        map: &HeaderMap,
        body_hash: &[u8; 32],
        now_ms: u64,
    ) -> Result<(), Status> {
        let envelope = match Envelope::from_headers(map) {
            Ok(e) => e,
            Err(EnvelopeError::Missing) => {
                return Err(response_refusal(format!(
                    "from {} carries no {SIGNATURE_HEADER} envelope (unsigned)",
                    self.server
                )))
            }
            Err(e) => return Err(response_refusal(format!("envelope is malformed: {e}"))),
        };
        let (public, signer) = client_keys()
            .get(&envelope)
            .map_err(|e| response_refusal(format!("envelope is malformed: {e}")))?;
        if signer != self.server {
            return Err(response_refusal(format!(
                "is signed by {signer}, not by the called peer {}",
                self.server
            )));
        }
        if envelope.target != self.me {
            return Err(response_refusal(format!(
                "is for {}, not for this caller {}",
                envelope.target, self.me
            )));
        }
        if envelope.nonce != self.nonce {
            return Err(response_refusal(
                "answers another request (its nonce is not this request's)",
            ));
        }
        if let Some(reason) = skew_reason(now_ms, envelope.timestamp_ms, self.max_skew) {
            return Err(response_refusal(format!("envelope is stale: {reason}")));
        }
        if !envelope.verify_response(&public, &self.path, body_hash) {
            return Err(response_refusal(format!(
                "signature of {signer} does not match what arrived (tampered response)"
            )));
        }
        Ok(())
    }
}

async fn buffer_body(body: Body, max: usize) -> Result<Bytes, Status> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                Err(Status::resource_exhausted(format!(
                    "signature: request body over {max} bytes"
                )))
            } else {
                Err(Status::from_error(e))
            }
        }
    }
}

impl tower::Service<http::Request<Body>> for SignedChannel {
    type Response = http::Response<VerifiedBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::poll_ready(&mut self.inner, cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The ready channel goes with this call; a clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let signer = self.signer.clone();
        let (target, max_skew, max_body) = (self.target, self.max_skew, self.max_body_bytes);
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let bytes = buffer_body(body, max_body).await?;
            let path = parts.uri.path().to_owned();
            let nonce: Nonce = rand::random();
            let envelope = Envelope::sign_request(&signer, &path, target, unix_ms(), nonce, &bytes);
            parts
                .headers
                .insert(SIGNATURE_HEADER, envelope.to_header_value());
            let request = http::Request::from_parts(parts, Body::new(Full::new(bytes)));
            let response = tower::Service::call(&mut inner, request).await?;
            let expected = Expected {
                path,
                nonce,
                server: target,
                me: signer.peer_id(),
                max_skew,
            };
            let (parts, inner) = response.into_parts();
            if parts.headers.contains_key(GRPC_STATUS) {
                // A refusal of the server's authorizers comes unsigned (it
                // costs the server no signature): pass its status on. A
                // success must be signed.
                let unsigned_refusal = matches!(
                    Envelope::from_headers(&parts.headers),
                    Err(EnvelopeError::Missing)
                ) && tonic::Status::from_header_map(&parts.headers)
                    .is_some_and(|s| s.code() != tonic::Code::Ok);
                if unsigned_refusal {
                    return Ok(http::Response::from_parts(
                        parts,
                        VerifiedBody { inner, check: None },
                    ));
                }
                // Trailers-only: signed in the headers, over an empty body.
                if let Err(refusal) = expected.check(&parts.headers, &body_hash(&[]), unix_ms()) {
                    let said = tonic::Status::from_header_map(&parts.headers)
                        .map(|s| format!(" (it said {:?}: {})", s.code(), s.message()))
                        .unwrap_or_default();
                    return Err(Box::new(Status::new(
                        refusal.code(),
                        format!("{}{said}", refusal.message()),
                    )) as BoxError);
                }
                return Ok(http::Response::from_parts(
                    parts,
                    VerifiedBody { inner, check: None },
                ));
            }
            let check = Some(Box::new(ResponseCheck {
                expected,
                hasher: Sha256::new(),
            }));
            Ok(http::Response::from_parts(
                parts,
                VerifiedBody { inner, check },
            ))
        })
    }
}

pub(super) struct ResponseCheck {
    pub(super) expected: Expected,
    pub(super) hasher: Sha256,
}

/// A response body whose trailers must carry a valid signature of its data;
/// otherwise it ends with a `Code::Unauthenticated` error.
pub struct VerifiedBody {
    pub(super) inner: Body,
    pub(super) check: Option<Box<ResponseCheck>>,
}

impl std::fmt::Debug for VerifiedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedBody")
            .field("checked", &self.check.is_none())
            .finish_non_exhaustive()
    }
}

impl HttpBody for VerifiedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let Some(check) = this.check.as_mut() else {
            return Pin::new(&mut this.inner).poll_frame(cx);
        };
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    check.hasher.update(data);
                    return Poll::Ready(Some(Ok(frame)));
                }
                let Some(trailers) = frame.trailers_ref() else {
                    return Poll::Ready(Some(Ok(frame)));
                };
                let check = this.check.take().expect("check");
                let hash: [u8; 32] = check.hasher.finalize().into();
                match check.expected.check(trailers, &hash, unix_ms()) {
                    Ok(()) => Poll::Ready(Some(Ok(frame))),
                    Err(status) => Poll::Ready(Some(Err(status))),
                }
            }
            Some(Err(status)) => Poll::Ready(Some(Err(status))),
            None => {
                this.check = None;
                Poll::Ready(Some(Err(response_refusal(
                    "ended without trailers to carry its signature",
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.check.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
