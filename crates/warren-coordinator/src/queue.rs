//! The queue port (Pythia's, 9000 by default): workers and plain Pythia pools register here, and
//! plain Pythia frontends launch tasks here. A connection's first meaningful message decides its
//! role; anything that is not the protocol closes that one connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use warren_proto::{spawn_writer, Message, MessageReader, MessageSender, ReadError};

use crate::api::constant_time_eq;
use crate::service::{Hello, Service};

/// Settings of the queue port.
#[derive(Debug, Clone)]
pub struct QueuePort {
    /// Keep-alive interval (a peer silent for three is dropped).
    pub keepalive: Duration,
    /// Join token workers must present; `None` on a loopback-only listener.
    pub token: Option<Arc<str>>,
}

/// Accepts connections forever.
pub async fn serve(listener: TcpListener, service: Arc<Service>, port: QueuePort) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                let service = Arc::clone(&service);
                let port = port.clone();
                tokio::spawn(async move { handle(stream, addr, service, port).await });
            }
            Err(e) => {
                tracing::warn!("accepting on the queue port: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

enum Role {
    Undecided {
        register: Option<warren_proto::Register>,
    },
    Worker {
        id: String,
    },
    Frontend,
}

async fn handle(stream: TcpStream, addr: SocketAddr, service: Arc<Service>, port: QueuePort) {
    let conn_id = service.next_conn();
    let (read, write) = stream.into_split();
    let (tx, _writer) = spawn_writer(write, port.keepalive);
    let mut reader = MessageReader::new(read, port.keepalive);
    let mut role = Role::Undecided { register: None };
    let end = loop {
        let message = match reader.next().await {
            Ok(Some(m)) => m,
            Ok(None) => break "connection closed".to_string(),
            Err(ReadError::Silent(d)) => break format!("silent for {d:?}"),
            Err(e) => {
                tracing::warn!(%addr, "closing queue connection: {e}");
                break e.to_string();
            }
        };
        // A worker's keep-alive is its heartbeat (it updates `last_seen`); elsewhere it only
        // proves the connection is alive, which reading it already did.
        if matches!(message, Message::KeepAlive) && !matches!(role, Role::Worker { .. }) {
            continue;
        }
        role = match step(role, message, conn_id, &tx, addr, &service, &port) {
            Ok(next) => next,
            Err(reason) => {
                // Only an undecided connection is refused.
                role = Role::Undecided { register: None };
                tracing::warn!(%addr, "refusing queue connection: {reason}");
                tx.send(Message::Refused {
                    reason: reason.clone(),
                });
                break reason;
            }
        };
    };
    match role {
        Role::Worker { id } => service.worker_lost(&id, conn_id, &end),
        Role::Frontend => service.frontend_closed(conn_id),
        Role::Undecided { .. } => {}
    }
}

fn step(
    role: Role,
    message: Message,
    conn_id: u64,
    tx: &MessageSender,
    addr: SocketAddr,
    service: &Arc<Service>,
    port: &QueuePort,
) -> Result<Role, String> {
    match role {
        Role::Undecided { register } => match message {
            Message::Register(reg) => {
                if let Some(token) = &port.token {
                    let ok = reg
                        .token
                        .as_deref()
                        .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
                    if !ok {
                        return Err("invalid or missing join token (give the worker --token-file or WARREN_TOKEN)".into());
                    }
                }
                if reg.id.is_empty() || reg.id.len() > 128 || reg.id.starts_with("pool-") {
                    return Err(format!("`{}` is not a worker id", reg.id));
                }
                Ok(Role::Undecided {
                    register: Some(reg),
                })
            }
            Message::RegisterPool { capacity } => {
                let hello = match register {
                    Some(mut reg) => {
                        reg.capacity = capacity;
                        Hello::Warren(reg)
                    }
                    None if port.token.is_some() => {
                        return Err("this queue requires a join token: plain Pythia pools are accepted on loopback only".into())
                    }
                    None => Hello::Pool { capacity },
                };
                let id = service.worker_connected(hello, conn_id, tx.clone(), addr);
                tracing::info!(%addr, worker = id, capacity, "worker registered");
                Ok(Role::Worker { id })
            }
            Message::Launch(_) | Message::Abort { .. } => {
                if port.token.is_some() {
                    return Err("this queue requires a join token: plain Pythia frontends are accepted on loopback only".into());
                }
                service.frontend_opened(conn_id, tx.clone());
                step(Role::Frontend, message, conn_id, tx, addr, service, port)
            }
            other => {
                tracing::debug!(%addr, kind = other.kind(), "ignoring message before registration");
                Ok(Role::Undecided { register })
            }
        },
        Role::Worker { id } => {
            service.worker_message(&id, conn_id, message);
            Ok(Role::Worker { id })
        }
        Role::Frontend => {
            match message {
                Message::Launch(launch) => service.frontend_launch(conn_id, launch),
                Message::Abort { id } => service.frontend_abort(conn_id, &id),
                other => {
                    tracing::debug!(%addr, kind = other.kind(), "ignoring message from a frontend")
                }
            }
            Ok(Role::Frontend)
        }
    }
}
