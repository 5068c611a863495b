//! The web dashboard: one static page that uses the public HTTP API (workers, tasks, live output
//! over server-sent events, submit and cancel). It holds no state and needs none.

use axum::response::Html;
use axum::routing::get;
use axum::Router;

const PAGE: &str = include_str!("dashboard.html");

/// `GET /`: the dashboard page.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(|| async { Html(PAGE) }))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn the_page_is_served_and_uses_the_public_api() {
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
            return;
        };
        let Ok(addr) = listener.local_addr() else {
            return;
        };
        let app: Router = routes();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await else {
            panic!("connect")
        };
        conn.write_all(b"GET / HTTP/1.0\r\nHost: warren\r\n\r\n")
            .await
            .ok();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.ok();
        assert!(
            answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
            "{answer}"
        );
        assert!(answer.contains("text/html"));
        for endpoint in [
            "/v1/tasks",
            "/v1/workers",
            "/output",
            "/cancel",
            "EventSource",
        ] {
            assert!(
                answer.contains(endpoint),
                "the page does not use {endpoint}"
            );
        }
    }
}
