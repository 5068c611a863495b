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
