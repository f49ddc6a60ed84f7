//! Typed RPC between peers: tonic over libp2p streams.
//!
//! Server side: [`incoming`] turns the inbound streams of the RPC protocol
//! into connections for `tonic::transport::Server::serve_with_incoming*`;
//! every request then carries a [`Caller`] (the remote PeerId that Noise
//! authenticated) in its extensions. Client side: [`connect`] gives a tonic
//! `Channel` to one PeerId that opens a libp2p stream whenever it needs a
//! connection; calls to a peer that cannot be reached fail with
//! `Code::Unavailable`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use mesh_core::SubnetId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};
use tonic::transport::{Channel, Endpoint, Uri};

/// The RPC protocol of a subnet: `/mesh/<subnet_id>/rpc/1`.
pub fn rpc_protocol(subnet_id: SubnetId) -> StreamProtocol {
    StreamProtocol::try_from_owned(subnet_id.protocol("rpc/1"))
        .expect("a protocol that starts with '/'")
}

/// Who made a call: found in every request's extensions on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The caller's PeerId, authenticated by the libp2p connection.
    pub peer_id: PeerId,
}

/// The PeerId that made `request` (`None` outside an RPC server).
pub fn caller<T>(request: &tonic::Request<T>) -> Option<PeerId> {
    request.extensions().get::<Caller>().map(|c| c.peer_id)
}

/// Why RPC could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Another part of this node already serves the protocol.
    #[error("the RPC protocol {0} is already served on this node")]
    AlreadyServed(StreamProtocol),
}

/// Bytes an inbound connection must send within [`FIRST_BYTES_TIMEOUT`]:
/// the HTTP/2 preface (24) and the frame headers of its SETTINGS and first
/// request (9 each), which any real caller sends at once.
pub const FIRST_BYTES: usize = 42;
/// How long an inbound connection may take to send [`FIRST_BYTES`]; one
/// that opens and stays silent (or trickles) is dropped then.
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// One libp2p stream used as one HTTP/2 connection.
pub struct PeerIo {
    io: Compat<libp2p::Stream>,
    peer: PeerId,
    /// Inbound: until [`FIRST_BYTES`] have arrived, when to give up.
    first_bytes: Option<(Pin<Box<tokio::time::Sleep>>, usize, Duration)>,
}

impl PeerIo {
    /// Wrap a stream opened by or to `peer`.
    pub fn new(stream: libp2p::Stream, peer: PeerId) -> Self {
        Self {
            io: stream.compat(),
            peer,
            first_bytes: None,
        }
    }

    /// Wrap a stream `peer` opened to us: reads fail with `TimedOut` unless
    /// [`FIRST_BYTES`] arrive within `timeout`.
    pub fn inbound(stream: libp2p::Stream, peer: PeerId, timeout: Duration) -> Self {
        Self {
            first_bytes: Some((Box::pin(tokio::time::sleep(timeout)), 0, timeout)),
            ..Self::new(stream, peer)
        }
    }

    /// The remote peer.
    pub fn peer(&self) -> PeerId {
        self.peer
    }
}

impl AsyncRead for PeerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some((deadline, _, timeout)) = &mut this.first_bytes {
            if std::future::Future::poll(deadline.as_mut(), cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("peer {} sent no request within {timeout:?}", this.peer),
                )));
            }
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Some((_, got, _)) = &mut this.first_bytes {
            *got += buf.filled().len() - before;
            if *got >= FIRST_BYTES {
                this.first_bytes = None;
            }
        }
        polled
    }
}

impl AsyncWrite for PeerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for PeerIo {
    type ConnectInfo = Caller;

    fn connect_info(&self) -> Caller {
        Caller { peer_id: self.peer }
    }
}

/// Inbound RPC streams held for the server while its accept loop is busy.
/// Callers open one stream per connection, so a gateway's concurrent users
/// arrive as a burst; a stream that finds the buffer full is reset.
pub const INBOUND_STREAM_BUFFER: usize = 128;

/// The inbound RPC streams of `protocol`, as connections for
/// `tonic::transport::Server::serve_with_incoming_shutdown`; each must
/// start its request within [`FIRST_BYTES_TIMEOUT`].
pub fn incoming(
    control: &mut libp2p_stream::Control,
    protocol: StreamProtocol,
) -> Result<impl Stream<Item = Result<PeerIo, io::Error>> + Send + 'static, RpcError> {
    incoming_with_timeout(control, protocol, FIRST_BYTES_TIMEOUT)
}

/// [`incoming`] with another limit on the time to the first bytes.
pub fn incoming_with_timeout(
    control: &mut libp2p_stream::Control,
    protocol: StreamProtocol,
    first_bytes: Duration,
) -> Result<impl Stream<Item = Result<PeerIo, io::Error>> + Send + 'static, RpcError> {
    let streams = control
        .accept_with_buffer(protocol.clone(), INBOUND_STREAM_BUFFER)
        .map_err(|_| RpcError::AlreadyServed(protocol))?;
    Ok(streams.map(move |(peer, stream)| {
        tracing::debug!(%peer, "inbound RPC connection");
        Ok(PeerIo::inbound(stream, peer, first_bytes))
    }))
}

/// Like [`connect`], on a DHT node: before each stream is opened the peer is
/// connected to with [`mesh_dht::Dht::connect`], which looks up a peer the
/// node has no address of (one behind NAT is reached through its relay).
pub fn connect_through(
    dht: mesh_dht::Dht,
    peer: PeerId,
    protocol: StreamProtocol,
    connect_timeout: Duration,
) -> Channel {
    let connector = tower::service_fn(move |_: Uri| {
        let dht = dht.clone();
        let protocol = protocol.clone();
        async move {
            dht.connect(peer)
                .await
                .map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string()))?;
            let stream = dht
                .streams()
                .open_stream(peer, protocol)
                .await
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!("peer {peer}: {e}"),
                    )
                })?;
            Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(PeerIo::new(stream, peer)))
        }
    });
    Endpoint::from_static("http://mesh.peer")
        .connect_timeout(connect_timeout)
        .connect_with_connector_lazy(connector)
}

/// A channel to `peer`'s services on `protocol`. Lazy: the libp2p stream is
/// opened (and the peer dialed, if need be) at the first call and again
/// after it breaks; a call that cannot reach the peer within
/// `connect_timeout` fails with `Code::Unavailable`.
pub fn connect(
    control: libp2p_stream::Control,
    peer: PeerId,
    protocol: StreamProtocol,
    connect_timeout: Duration,
) -> Channel {
    let connector = tower::service_fn(move |_: Uri| {
        let mut control = control.clone();
        let protocol = protocol.clone();
        async move {
            let stream = control.open_stream(peer, protocol).await.map_err(|e| {
                io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("peer {peer}: {e}"),
                )
            })?;
            Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(PeerIo::new(stream, peer)))
        }
    });
    // The URI only names the HTTP/2 authority; the connector decides where
    // bytes go.
    Endpoint::from_static("http://mesh.peer")
        .connect_timeout(connect_timeout)
        .connect_with_connector_lazy(connector)
}
