//! Server: signing responses (in the trailers, so streams stay streams).

use super::*;

/// Signs every response of a server (module docs) but the
/// [`crate::AuthLayer`]'s own refusals (marked [`crate::auth::AuthRefusal`]):
/// a caller that is refused before a handler runs costs the server no
/// signature (with RSA keys, signing is the expensive part), and learns
/// nothing a signature would protect. Put it outside the layer:
/// `.layer(SignResponsesLayer::new(key)).layer(auth)`.
#[derive(Clone, Debug)]
pub struct SignResponsesLayer {
    signer: EnvelopeSigner,
}

impl SignResponsesLayer {
    /// Sign with the server's key.
    pub fn new(key: Arc<PeerKey>) -> Self {
        Self {
            signer: EnvelopeSigner::new(key),
        }
    }
}

impl<S> tower::Layer<S> for SignResponsesLayer {
    type Service = SignResponses<S>;

    fn layer(&self, inner: S) -> SignResponses<S> {
        SignResponses {
            inner,
            signer: self.signer.clone(),
        }
    }
}

/// The service [`SignResponsesLayer`] makes.
#[derive(Clone, Debug)]
pub struct SignResponses<S> {
    inner: S,
    signer: EnvelopeSigner,
}

/// What a response signature binds to.
#[derive(Clone, Debug)]
pub(super) struct ResponseBinding {
    pub(super) path: String,
    pub(super) nonce: Nonce,
    pub(super) caller: PeerId,
}

impl<S, B, RB> tower::Service<http::Request<B>> for SignResponses<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    RB: HttpBody<Data = Bytes>,
{
    type Response = http::Response<SignedBody<RB>>;
    type Error = S::Error;
    type Future = SignResponsesFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Unsigned requests get signed answers too, bound to a zero nonce.
        // Without a libp2p caller there is nobody to bind the answer to.
        let binding = request
            .extensions()
            .get::<Caller>()
            .map(|c| ResponseBinding {
                path: request.uri().path().to_owned(),
                nonce: Envelope::from_headers(request.headers())
                    .map(|e| e.nonce)
                    .unwrap_or_default(),
                caller: c.peer_id,
            });
        SignResponsesFuture {
            inner: self.inner.call(request),
            signing: binding.map(|b| (self.signer.clone(), b)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`SignResponses`].
    pub struct SignResponsesFuture<F> {
        #[pin]
        inner: F,
        signing: Option<(EnvelopeSigner, ResponseBinding)>,
    }
}

impl<F, RB, E> Future for SignResponsesFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
    RB: HttpBody<Data = Bytes>,
{
    type Output = Result<http::Response<SignedBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let refusal = response
            .extensions()
            .get::<crate::auth::AuthRefusal>()
            .is_some();
        let signing = this.signing.take().filter(|_| !refusal);
        let Some((signer, binding)) = signing else {
            return Poll::Ready(Ok(response.map(|inner| SignedBody {
                inner,
                pending: None,
            })));
        };
        let (mut parts, inner) = response.into_parts();
        if parts.headers.contains_key(GRPC_STATUS) {
            // Trailers-only: the status is in the headers, and so is the signature.
            let envelope = Envelope::sign_response(
                &signer,
                &binding.path,
                binding.caller,
                unix_ms(),
                binding.nonce,
                &body_hash(&[]),
            );
            parts
                .headers
                .insert(SIGNATURE_HEADER, envelope.to_header_value());
            let body = SignedBody {
                inner,
                pending: None,
            };
            return Poll::Ready(Ok(http::Response::from_parts(parts, body)));
        }
        let pending = Some(Box::new(PendingSignature {
            signer,
            binding,
            hasher: Sha256::new(),
        }));
        Poll::Ready(Ok(http::Response::from_parts(
            parts,
            SignedBody { inner, pending },
        )))
    }
}

pub(super) struct PendingSignature {
    pub(super) signer: EnvelopeSigner,
    pub(super) binding: ResponseBinding,
    pub(super) hasher: Sha256,
}

impl PendingSignature {
    fn envelope(self) -> HeaderValue {
        let hash: [u8; 32] = self.hasher.finalize().into();
        Envelope::sign_response(
            &self.signer,
            &self.binding.path,
            self.binding.caller,
            unix_ms(),
            self.binding.nonce,
            &hash,
        )
        .to_header_value()
    }
}

pin_project_lite::pin_project! {
    /// A response body that hashes its data as it streams and signs it in
    /// the trailers.
    pub struct SignedBody<B> {
        #[pin]
        pub(super) inner: B,
        pub(super) pending: Option<Box<PendingSignature>>,
    }
}

impl<B> HttpBody for SignedBody<B>
where
    B: HttpBody<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let Some(pending) = this.pending.as_mut() else {
            return this.inner.poll_frame(cx);
        };
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    pending.hasher.update(data);
                    return Poll::Ready(Some(Ok(frame)));
                }
                match frame.into_trailers() {
                    Ok(mut trailers) => {
                        let pending = this.pending.take().expect("pending");
                        trailers.insert(SIGNATURE_HEADER, pending.envelope());
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    Err(frame) => Poll::Ready(Some(Ok(frame))),
                }
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => {
                // The body ended without trailers: send the signature in some.
                let pending = this.pending.take().expect("pending");
                let mut trailers = HeaderMap::new();
                trailers.insert(SIGNATURE_HEADER, pending.envelope());
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
