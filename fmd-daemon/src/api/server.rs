//! Serving the router on a TCP listener with the bounds a root daemon's HTTP port needs: a client that
//! sends its request head too slowly is disconnected (hyper's header-read timeout, which `axum::serve`
//! leaves off because it sets no timer), a request body larger than [`MAX_BODY`] is refused with 413, and a
//! call that takes longer than [`Limits::call`] answers 408. Heads are bounded by hyper (100 headers, a
//! ~400 KiB read buffer).

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Request, StatusCode},
    Router,
};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tower::{Service as _, ServiceBuilder};
use tower_http::{
    body::Limited,
    limit::RequestBodyLimitLayer,
    timeout::{RequestBodyTimeoutLayer, TimeoutBody, TimeoutLayer},
};
use tracing::{debug, warn};

/// Largest request body accepted: the API's bodies are small JSON documents (logins, settings).
pub const MAX_BODY: usize = 64 * 1024;

/// How long a client may take, per stage.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// To send a request head (also the longest an idle keep-alive connection is kept).
    pub head: Duration,
    /// To send a request body.
    pub body: Duration,
    /// For the whole call, query included.
    pub call: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            head: Duration::from_secs(10),
            body: Duration::from_secs(10),
            // The heaviest query measured (grouped profile of 10,000 requests on a 10 M store) takes seconds.
            call: Duration::from_secs(30),
        }
    }
}

/// The bounds every call goes through (time, body size), with every `/api/` error turned into JSON,
/// theirs included. The body layers wrap the request body in their own types; the router takes axum's
/// `Body`, so each is boxed back.
pub fn bounded<S: Clone + Send + Sync + 'static>(router: Router<S>, limits: Limits) -> Router<S> {
    // Each `Router::layer` wraps the ones before it: the JSON rewrite sees every other layer's errors.
    router
        .layer(
            ServiceBuilder::new()
                .layer(RequestBodyLimitLayer::new(MAX_BODY))
                .map_request(|request: Request<Limited<Body>>| request.map(Body::new)),
        )
        .layer(
            ServiceBuilder::new()
                .layer(RequestBodyTimeoutLayer::new(limits.body))
                .map_request(|request: Request<TimeoutBody<Body>>| request.map(Body::new)),
        )
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.call,
        ))
        .layer(axum::middleware::from_fn(super::json_errors::json_errors))
}

/// Serves `router` (bounded by [`bounded`]) on `listener` until `shutdown` resolves, then lets calls in
/// flight finish. Each request carries `ConnectInfo<SocketAddr>` like `axum::serve`'s
/// `into_make_service_with_connect_info`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    warn!(error = %e, "API: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let mut router = router.clone();
        let service = tower::service_fn(move |mut request: hyper::Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(remote));
            let request = request.map(Body::new);
            // `Router`'s error is `Infallible`.
            let call = router.call(request);
            async move { Ok::<_, Infallible>(call.await.unwrap_or_else(|e| match e {})) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.head)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(%remote, error = %e, "API connection ended");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    async fn start(limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let router =
            Router::new()
                .route("/ok", get(|| async { "ok" }))
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        "late"
                    }),
                )
                .route("/echo", post(|body: String| async move { body }))
                .route(
                    "/peer",
                    get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                        peer.ip().to_string()
                    }),
                );
        let router = bounded(router, limits);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(serve(listener, router, limits, async {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    /// Writes `bytes`, then reads until the server closes (or 5 s pass): what it answered.
    async fn exchange(addr: SocketAddr, bytes: &[u8]) -> (String, Duration) {
        let started = Instant::now();
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(bytes).await.expect("write");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        (
            String::from_utf8_lossy(&answer).into_owned(),
            started.elapsed(),
        )
    }

    const SHORT: Limits = Limits {
        head: Duration::from_millis(300),
        body: Duration::from_millis(300),
        call: Duration::from_millis(1500),
    };

    #[tokio::test]
    async fn slow_clients_and_large_bodies_are_cut_off() {
        let (addr, _stop) = start(SHORT).await;
        let (answer, _) = exchange(
            addr,
            b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
            "{answer}"
        );
        let (answer, _) = exchange(
            addr,
            b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.ends_with("127.0.0.1"), "{answer}");

        // A head that never ends: the connection is closed once the head timeout passes.
        let (answer, took) = exchange(addr, b"GET /ok HTTP/1.1\r\nHost: x\r\n").await;
        assert!(!answer.contains("200"), "{answer}");
        assert!(took < Duration::from_secs(4), "closed after {took:?}");

        // A body announced but not sent: cut off at the body timeout, before the call's.
        let (answer, took) = exchange(
            addr,
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\nabc",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
        assert!(took < SHORT.call, "answered after {took:?}");

        // A body over the limit is refused before it is read.
        let head = format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            MAX_BODY + 1
        );
        let (answer, _) = exchange(addr, head.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

        // A call that takes too long.
        let (answer, _) = exchange(
            addr,
            b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
}
