//! Helpers for the integration tests: a coordinator stand-in served by axum on 127.0.0.1.

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

/// Serves `router` on a fresh port of 127.0.0.1 until the test's runtime ends; returns its URL.
pub async fn serve(router: Router) -> String {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(e) => panic!("binding 127.0.0.1:0: {e}"),
    };
    let addr: SocketAddr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => panic!("local_addr: {e}"),
    };
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

/// A URL where nothing listens: a port that was just bound and released.
pub async fn closed_port_url() -> String {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(e) => panic!("binding 127.0.0.1:0: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => panic!("local_addr: {e}"),
    };
    drop(listener);
    format!("http://{addr}")
}

/// A task view as JSON, in `state`, with `result` when given.
pub fn task_json(id: u64, state: &str, result: Option<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "state": state,
        "worker": if state == "WAITING" { None } else { Some("w1") },
        "owner": "alice",
        "priority": 8,
        "created_at": "2026-11-22T11:05:32.123Z",
        "started_at": null,
        "finished_at": null,
        "attempts": 1,
        "command": ["echo", "hi"],
        "result": result,
    })
}

/// A result as `warren sandbox run --json` prints it.
pub fn result_json(status: &str, exit_code: Option<i32>) -> serde_json::Value {
    serde_json::json!({
        "status": status,
        "exit_code": exit_code,
        "signal": null,
        "limit_hit": null,
        "usage": {"wall_ms": 3, "cpu_user_ms": 1, "cpu_sys_ms": 1, "peak_memory_bytes": 1048576,
                  "peak_pids": 1, "output_bytes": 3},
        "stdout": "hi\n",
        "stderr": "",
        "stats": [],
    })
}
