//! The embedded store: one SQLite file in write-ahead-log mode.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};
use warren_core::task::{TaskId, TaskState, Timestamp, WorkerView};

use super::{
    ListPage, ListQuery, Origin, Paginator, SortKey, Store, StoreError, TaskRecord, Write,
};

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit is on disk before it returns (`synchronous=FULL`): survives power loss.
    #[default]
    Full,
    /// Commits survive the process being killed at any moment, not the machine losing power
    /// (`synchronous=NORMAL`).
    Process,
}

/// SQLite, WAL mode.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    spec TEXT NOT NULL,
    owner TEXT NOT NULL,
    priority INTEGER NOT NULL,
    queue_order INTEGER NOT NULL,
    worker TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    reason TEXT,
    result TEXT,
    origin TEXT NOT NULL,
    idempotency_key TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_by_key ON tasks(idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks(state, id);
CREATE INDEX IF NOT EXISTS tasks_by_owner ON tasks(owner, id);
CREATE INDEX IF NOT EXISTS tasks_by_worker ON tasks(worker, id);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    view TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

const COLUMNS: &str =
    "id, state, spec, owner, priority, queue_order, worker, attempts, created_at, \
                       started_at, finished_at, reason, origin, idempotency_key";

impl SqliteStore {
    /// Opens (creating when missing) the database at `path`.
    pub fn open(path: &Path, durability: Durability) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Process => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore { conn })
    }
}

/// The SQL value of a sort key; it orders rows as [`SortKey::value`] does.
fn sort_expression(key: SortKey) -> String {
    match key {
        SortKey::Id => "id".into(),
        SortKey::Priority => "priority".into(),
        SortKey::Deadline => "COALESCE(json_extract(spec, '$.deadline'), '')".into(),
        SortKey::ValidAfter => "COALESCE(json_extract(spec, '$.valid_after'), '')".into(),
        SortKey::State => {
            let cases: String = TaskState::ALL
                .iter()
                .map(|s| format!(" WHEN '{}' THEN {}", s.name(), super::state_rank(*s)))
                .collect();
            format!("(CASE state{cases} ELSE {} END)", TaskState::ALL.len())
        }
    }
}

fn ms(t: Timestamp) -> i64 {
    t.unix_ms
}

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp::from_unix_ms)
}

fn corrupt(id: i64, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: format!("task {id}"),
        detail: detail.to_string(),
    }
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        what: "value to store".into(),
        detail: e.to_string(),
    }
}

fn read_task(row: &Row<'_>, with_result: bool) -> Result<TaskRecord, StoreError> {
    let id: i64 = row.get(0)?;
    let state: String = row.get(1)?;
    let spec: String = row.get(2)?;
    let result: Option<String> = if with_result { row.get(14)? } else { None };
    Ok(TaskRecord {
        id: id as TaskId,
        state: state.parse::<TaskState>().map_err(|e| corrupt(id, e))?,
        spec: serde_json::from_str(&spec).map_err(|e| corrupt(id, e))?,
        owner: row.get(3)?,
        priority: row.get(4)?,
        queue_order: row.get(5)?,
        worker: row.get(6)?,
        attempts: row.get(7)?,
        created_at: Timestamp::from_unix_ms(row.get(8)?),
        started_at: ts(row.get(9)?),
        finished_at: ts(row.get(10)?),
        reason: row.get(11)?,
        origin: Origin::parse(&row.get::<_, String>(12)?),
        idempotency_key: row.get(13)?,
        result: match result {
            Some(text) => Some(serde_json::from_str(&text).map_err(|e| corrupt(id, e))?),
            None => None,
        },
    })
}

impl Store for SqliteStore {
    fn apply(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for write in writes {
            match write {
                Write::Insert(t) => {
                    let spec = serde_json::to_string(&t.spec).map_err(json_err)?;
                    tx.prepare_cached(
                        "INSERT INTO tasks (id, state, spec, owner, priority, queue_order, worker, attempts, \
                         created_at, started_at, finished_at, reason, origin, idempotency_key) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                    )?
                    .execute(params![
                        t.id as i64,
                        t.state.name(),
                        spec,
                        t.owner,
                        t.priority,
                        t.queue_order,
                        t.worker,
                        t.attempts,
                        ms(t.created_at),
                        t.started_at.map(ms),
                        t.finished_at.map(ms),
                        t.reason,
                        t.origin.name(),
                        t.idempotency_key,
                    ])?;
                }
                Write::Dispatch {
                    id,
                    worker,
                    attempts,
                    started_at,
                } => {
                    tx.prepare_cached(
                        "UPDATE tasks SET state = 'IN PROGRESS', worker = ?2, attempts = ?3, started_at = ?4 \
                         WHERE id = ?1",
                    )?
                    .execute(params![*id as i64, worker, attempts, ms(*started_at)])?;
                }
                Write::Requeue {
                    id,
                    queue_order,
                    reason,
                } => {
                    tx.prepare_cached(
                        "UPDATE tasks SET state = 'WAITING', worker = NULL, queue_order = ?2, reason = ?3 \
                         WHERE id = ?1",
                    )?
                    .execute(params![*id as i64, queue_order, reason])?;
                }
                Write::Finish {
                    id,
                    state,
                    worker,
                    result,
                    reason,
                    finished_at,
                } => {
                    let result = match result {
                        Some(r) => Some(serde_json::to_string(r).map_err(json_err)?),
                        None => None,
                    };
                    tx.prepare_cached(
                        "UPDATE tasks SET state = ?2, worker = COALESCE(?3, worker), result = ?4, reason = ?5, \
                         finished_at = ?6 WHERE id = ?1",
                    )?
                    .execute(params![*id as i64, state.name(), worker, result, reason, ms(*finished_at)])?;
                }
                Write::Worker(view) => {
                    let text = serde_json::to_string(view).map_err(json_err)?;
                    tx.prepare_cached(
                        "INSERT INTO workers (id, view) VALUES (?1, ?2) \
                         ON CONFLICT(id) DO UPDATE SET view = excluded.view",
                    )?
                    .execute(params![view.id, text])?;
                }
                Write::RemoveWorker(id) => {
                    tx.prepare_cached("DELETE FROM workers WHERE id = ?1")?
                        .execute([id])?;
                }
                Write::ReserveIds(up_to) => {
                    tx.prepare_cached(
                        "INSERT INTO meta (key, value) VALUES ('reserved_ids', ?1)
                         ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)",
                    )?
                    .execute([*up_to as i64])?;
                }
                Write::Update { id, priority, spec } => {
                    let spec = serde_json::to_string(spec).map_err(json_err)?;
                    tx.prepare_cached("UPDATE tasks SET priority = ?2, spec = ?3 WHERE id = ?1")?
                        .execute(params![*id as i64, priority, spec])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn active_tasks(&mut self) -> Result<Vec<TaskRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM tasks WHERE state IN ('WAITING', 'IN PROGRESS') ORDER BY id"
        ))?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(read_task(row, false)?);
        }
        Ok(out)
    }

    fn task(&mut self, id: TaskId) -> Result<Option<TaskRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS}, result FROM tasks WHERE id = ?1"
        ))?;
        let row = stmt
            .query_row([id as i64], |row| Ok(read_task(row, true)))
            .optional()?;
        row.transpose()
    }

    fn task_by_key(&mut self, key: &str) -> Result<Option<TaskId>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM tasks WHERE idempotency_key = ?1")?;
        let id: Option<i64> = stmt.query_row([key], |row| row.get(0)).optional()?;
        Ok(id.map(|id| id as TaskId))
    }

    fn list(&mut self, q: &ListQuery) -> Result<ListPage, StoreError> {
        use rusqlite::types::Value;
        let key = sort_expression(q.sort);
        let mut filter = String::from("1 = 1");
        let mut args: Vec<Value> = Vec::new();
        let mut any_of = |column: &str, values: Vec<Value>, filter: &mut String| {
            if values.is_empty() {
                return;
            }
            let mut marks = Vec::new();
            for v in values {
                args.push(v);
                marks.push(format!("?{}", args.len()));
            }
            *filter += &format!(" AND {column} IN ({})", marks.join(", "));
        };
        any_of(
            "id",
            q.ids.iter().map(|id| Value::Integer(*id as i64)).collect(),
            &mut filter,
        );
        any_of(
            "state",
            q.states
                .iter()
                .map(|s| Value::Text(s.name().into()))
                .collect(),
            &mut filter,
        );
        any_of(
            "priority",
            q.priorities
                .iter()
                .map(|p| Value::Integer(i64::from(*p)))
                .collect(),
            &mut filter,
        );
        if let Some(owner) = &q.owner {
            args.push(owner.clone().into());
            filter += &format!(" AND owner = ?{}", args.len());
        }
        if let Some(worker) = &q.worker {
            args.push(worker.clone().into());
            filter += &format!(" AND worker = ?{}", args.len());
        }
        if !q.groups.is_empty() {
            let mut marks = Vec::new();
            for g in &q.groups {
                args.push(g.clone().into());
                marks.push(format!("?{}", args.len()));
            }
            filter += &format!(
                " AND EXISTS (SELECT 1 FROM json_each(spec, '$.groups') WHERE value IN ({}))",
                marks.join(", ")
            );
        }
        for (k, v) in &q.caps {
            // The key is quoted in the JSON path, so dots and spaces in it are literal.
            args.push(format!("$.caps.\"{}\"", k.replace('"', "")).into());
            args.push(v.clone().into());
            filter += &format!(
                " AND json_extract(spec, ?{}) = ?{}",
                args.len() - 1,
                args.len()
            );
        }
        let count = |conn: &Connection, filter: &str, args: &[Value]| -> Result<u64, StoreError> {
            let n: i64 = conn.query_row(
                &format!("SELECT COUNT(*) FROM tasks WHERE {filter}"),
                rusqlite::params_from_iter(args),
                |r| r.get(0),
            )?;
            Ok(n as u64)
        };
        let total = count(&self.conn, &filter, &args)?;
        let (mut forward, mut page_filter) = (!q.ascending, filter.clone());
        if let Some(paginator) = q.paginator {
            let value: Option<Value> = self
                .conn
                .query_row(
                    &format!("SELECT {key} FROM tasks WHERE id = ?1"),
                    [paginator.id() as i64],
                    |r| r.get(0),
                )
                .optional()?;
            let value = value.ok_or(StoreError::NoSuchTask(paginator.id()))?;
            // After, reading ascending: greater keys. Before flips the direction read.
            let greater = matches!(paginator, Paginator::After(_)) == q.ascending;
            let op = if greater { ">" } else { "<" };
            args.push(value);
            let v = args.len();
            args.push(Value::Integer(paginator.id() as i64));
            let id = args.len();
            page_filter += &format!(" AND ({key} {op} ?{v} OR ({key} = ?{v} AND id {op} ?{id}))");
            if matches!(paginator, Paginator::Before(_)) {
                forward = !forward;
            }
        }
        let beyond_paginator = if q.paginator.is_some() {
            count(&self.conn, &page_filter, &args)?
        } else {
            total
        };
        let direction = if forward { "DESC" } else { "ASC" };
        args.push(Value::Integer(i64::from(q.limit)));
        let sql = format!(
            "SELECT {COLUMNS} FROM tasks WHERE {page_filter} ORDER BY {key} {direction}, id {direction} LIMIT ?{}",
            args.len()
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        let mut records = Vec::new();
        while let Some(row) = rows.next()? {
            records.push(read_task(row, false)?);
        }
        if matches!(q.paginator, Some(Paginator::Before(_))) {
            records.reverse();
        }
        let remaining = beyond_paginator.saturating_sub(records.len() as u64);
        Ok(ListPage {
            records,
            total,
            remaining,
        })
    }

    fn max_task_id(&mut self) -> Result<TaskId, StoreError> {
        let max: Option<i64> = self.conn.query_row(
            "SELECT MAX(m) FROM (SELECT MAX(id) AS m FROM tasks
             UNION ALL SELECT value FROM meta WHERE key = 'reserved_ids')",
            [],
            |r| r.get(0),
        )?;
        Ok(max.unwrap_or(0) as TaskId)
    }

    fn workers(&mut self) -> Result<Vec<WorkerView>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, view FROM workers ORDER BY id")?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let text: String = row.get(1)?;
            out.push(
                serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                    what: format!("worker {id}"),
                    detail: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }
}
