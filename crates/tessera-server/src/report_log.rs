//! The report log (FlexNet's report log): every usage event of this server
//! (checkouts, fail-over conversions, check-ins, lapses, denials, queue
//! waits, seats moved, administrators' changes) appended to files of JSON
//! lines in `[report] dir`, each line chained to the one before by its
//! SHA-256 (`tessera_core::report`), so an edited, inserted or removed line
//! shows. A file is closed at `rotate_mb` or `rotate_hours`, or when the
//! server stops, and a closed file gets `FILE.sha256` (`sha256sum`'s
//! format), so a file cut short shows too. `tessera report` merges the
//! files of every server.
//!
//! Events go to a writer thread through a bounded channel: a checkout never
//! waits for the disk. The thread writes what arrived in one write, at
//! once, so a killed server loses none of it, and syncs at most every
//! [`SYNC_INTERVAL`] (at once when the log was quiet): a power cut loses at
//! most that much. Under load a sync per batch cost the server a sixth of
//! its CPU and competed with the grant store's syncs, which a checkout does
//! wait for. A full channel (a disk far slower than the requests) drops
//! events, counted and logged, rather than slow the serving.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tessera_core::report::{
    append_event_line, header_line, line_hash, EventKind, ReportHeader, UsageEvent,
};
use tessera_core::SharedText;

use crate::config::ReportConfig;
use crate::issuer::SeatRequest;

/// Events waiting for the writer, at most.
const QUEUED_EVENTS_MAX: usize = 65_536;
/// Longest a written event waits for its sync.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// After a batch, the writer lets events gather this long before it looks
/// again: under load it then takes them without being woken for each one
/// (a wake-up per event cost the serving threads more than the writing).
const GATHER: Duration = Duration::from_millis(5);

/// The server's handle on its report log; disabled, it records nothing.
pub struct ReportLog {
    sender: Mutex<Option<SyncSender<UsageEvent>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for ReportLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportLog")
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl ReportLog {
    pub fn disabled() -> ReportLog {
        ReportLog {
            sender: Mutex::new(None),
            writer: Mutex::new(None),
            dropped: AtomicU64::new(0),
        }
    }

    /// Starts the writer thread on a new file of `config.dir`.
    pub fn start(
        config: &ReportConfig,
        pool_id: &str,
        server: &str,
        started_unix_ms: i64,
    ) -> io::Result<ReportLog> {
        std::fs::create_dir_all(&config.dir)?;
        let header = ReportHeader {
            tessera_report: 1,
            pool_id: pool_id.to_string(),
            server: server.to_string(),
            started_unix_ms,
        };
        let mut file = Some(ReportFile::create(&config.dir, &header)?);
        let (sender, receiver) = mpsc::sync_channel::<UsageEvent>(QUEUED_EVENTS_MAX);
        let config = config.clone();
        let writer = std::thread::Builder::new()
            .name(format!("report-log-{server}"))
            .spawn(move || {
                if let Err(err) = write_events(&config, &mut file, &header, receiver) {
                    tracing::error!(
                        "the report log stopped: {err}; usage events are no longer recorded"
                    );
                }
            })?;
        Ok(ReportLog {
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            dropped: AtomicU64::new(0),
        })
    }

    /// Writes what is queued, closes the file with its checksum, and
    /// records nothing more (the server stops).
    pub fn close(&self) {
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }

    /// Records `event`, without waiting.
    pub fn record(&self, event: UsageEvent) {
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sender) = sender.as_ref() else {
            return;
        };
        match sender.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        "the report log's disk is behind: {dropped} usage events dropped so far"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Events dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The open file: its path, where the chain stands, its size and age, and
/// the SHA-256 of every byte written to it so far (the checksum written
/// beside it when it closes, without reading it back).
struct ReportFile {
    path: PathBuf,
    file: File,
    prev: String,
    bytes: u64,
    opened: Instant,
    written: Sha256,
}

impl ReportFile {
    /// A new file named after the server and the time, starting with the
    /// header; never an existing one.
    fn create(dir: &Path, header: &ReportHeader) -> io::Result<ReportFile> {
        let mut n = 0;
        let (path, mut file) = loop {
            let name = format!(
                "report-{}-{}-{n}.jsonl",
                header.server, header.started_unix_ms
            );
            let path = dir.join(name);
            match File::options().write(true).create_new(true).open(&path) {
                Ok(file) => break (path, file),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists && n < 1_000 => n += 1,
                Err(err) => return Err(err),
            }
        };
        let line = format!("{}\n", header_line(header));
        file.write_all(line.as_bytes())?;
        file.sync_data()?;
        if let Some(parent) = path.parent() {
            // The new name itself durable.
            File::open(parent).and_then(|d| d.sync_all()).ok();
        }
        Ok(ReportFile {
            prev: line_hash(line.trim_end_matches('\n')),
            bytes: line.len() as u64,
            file,
            path,
            opened: Instant::now(),
            written: Sha256::new_with_prefix(line.as_bytes()),
        })
    }

    /// Adds `event`'s line, chained to the last, to `batch` (written by
    /// [`ReportFile::write`]).
    fn append(&mut self, event: &UsageEvent, batch: &mut Vec<u8>) {
        let start = batch.len();
        append_event_line(&mut self.prev, event, batch);
        self.bytes += (batch.len() - start) as u64;
    }

    /// Writes `batch` in one go and empties it.
    fn write(&mut self, batch: &mut Vec<u8>) -> io::Result<()> {
        self.file.write_all(batch)?;
        self.written.update(batch.as_slice());
        batch.clear();
        Ok(())
    }

    /// Syncs the file and writes its checksum beside it.
    fn close(self) -> io::Result<()> {
        self.file.sync_all()?;
        drop(self.file);
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sum = format!("{}  {name}\n", hex::encode(self.written.finalize()));
        let mut sum_path = self.path.clone().into_os_string();
        sum_path.push(".sha256");
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .open(PathBuf::from(sum_path))?;
        file.write_all(sum.as_bytes())?;
        file.sync_all()
    }
}

/// The writer thread: batches of events, one sync each; a new file at the
/// size or age limit; the file closed when the server's handle goes.
fn write_events(
    config: &ReportConfig,
    file: &mut Option<ReportFile>,
    header: &ReportHeader,
    receiver: mpsc::Receiver<UsageEvent>,
) -> io::Result<()> {
    let rotate_after = Duration::from_millis(config.rotate_ms);
    let mut rotations = 0u64;
    let mut batch = Vec::with_capacity(64 * 1024);
    // When the file was last synced, and whether it has written lines since.
    let mut synced_at: Option<Instant> = None;
    let mut unsynced = false;
    loop {
        let wait = match synced_at {
            Some(at) if unsynced => SYNC_INTERVAL.saturating_sub(at.elapsed()),
            _ => Duration::from_secs(1),
        };
        let first = match receiver.recv_timeout(wait) {
            Ok(event) => Some(event),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let open = file.as_mut().expect("a file is open while the thread runs");
        let wrote = first.is_some();
        if let Some(event) = first {
            open.append(&event, &mut batch);
            for event in receiver.try_iter().take(4_096) {
                open.append(&event, &mut batch);
            }
            open.write(&mut batch)?;
            unsynced = true;
        }
        if unsynced && synced_at.is_none_or(|at| at.elapsed() >= SYNC_INTERVAL) {
            open.file.sync_data()?;
            synced_at = Some(Instant::now());
            unsynced = false;
        }
        if open.bytes >= config.rotate_bytes || open.opened.elapsed() >= rotate_after {
            rotations += 1;
            let next_header = ReportHeader {
                started_unix_ms: header.started_unix_ms + rotations as i64,
                ..header.clone()
            };
            let next = ReportFile::create(&config.dir, &next_header)?;
            // Closing syncs the old file; the new one starts synced.
            file.replace(next)
                .expect("a file is open while the thread runs")
                .close()?;
            unsynced = false;
        }
        if wrote {
            std::thread::sleep(GATHER);
        }
    }
    match file.take() {
        Some(open) => open.close(),
        None => Ok(()),
    }
}

impl crate::App {
    /// Records a usage event of `kind` for `request`'s seats, now.
    pub(crate) fn report_seats(
        &self,
        kind: EventKind,
        request: &SeatRequest,
        grant_id: &SharedText,
        detail: Option<String>,
    ) -> UsageEvent {
        UsageEvent {
            at_unix_ms: self.clock.unix_ms(),
            kind,
            feature: request.feature.clone(),
            user: request.user.clone(),
            host: request.host.clone(),
            grant_id: grant_id.clone(),
            count: request.count,
            detail,
            waited_ms: None,
            server: String::new(),
        }
    }

    /// Records a checkout refused before it reached the issuer (the
    /// policy's include and exclude rules).
    pub(crate) fn report_denied(
        &self,
        (feature, user, host): (&str, &str, &str),
        count: u32,
        code: &str,
    ) {
        self.report.record(UsageEvent {
            at_unix_ms: self.clock.unix_ms(),
            kind: EventKind::Denied,
            feature: feature.into(),
            user: user.into(),
            host: host.into(),
            grant_id: SharedText::default(),
            count,
            detail: Some(code.to_string()),
            waited_ms: None,
            server: String::new(),
        });
    }

    /// Records grants that left this server: checked in, or lapsed.
    pub(crate) fn report_released(&self, kind: EventKind, released: &[crate::issuer::Released]) {
        let at_unix_ms = self.clock.unix_ms();
        for grant in released {
            self.report.record(UsageEvent {
                at_unix_ms,
                kind,
                feature: grant.feature.clone(),
                user: grant.user.clone(),
                host: grant.host.clone(),
                grant_id: grant.grant_id.clone(),
                count: grant.seats,
                detail: None,
                waited_ms: None,
                server: String::new(),
            });
        }
    }

    /// Records an event that concerns no seat of a program: seats moved,
    /// an administrator's change.
    pub(crate) fn report_other(
        &self,
        kind: EventKind,
        feature: &str,
        user: &str,
        count: u32,
        detail: String,
    ) {
        self.report.record(UsageEvent {
            at_unix_ms: self.clock.unix_ms(),
            kind,
            feature: feature.into(),
            user: user.into(),
            host: "".into(),
            grant_id: SharedText::default(),
            count,
            detail: Some(detail),
            waited_ms: None,
            server: String::new(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: u32) -> UsageEvent {
        UsageEvent {
            at_unix_ms: i64::from(i),
            kind: EventKind::Checkout,
            feature: "cad".into(),
            user: format!("user{i}").into(),
            host: "pc".into(),
            grant_id: format!("g{i}").into(),
            count: 1,
            detail: None,
            waited_ms: None,
            server: String::new(),
        }
    }

    /// Events reach the open file without waiting for a sync or a close,
    /// each line whole and chained: a killed server loses none of them.
    #[test]
    fn events_are_written_at_once_while_the_file_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let config = ReportConfig {
            enabled: true,
            dir: dir.path().join("report"),
            rotate_bytes: 1 << 30,
            rotate_ms: 3_600_000,
        };
        let log = ReportLog::start(&config, "pool", "A", 1_000).unwrap();
        for i in 0..2_000 {
            log.record(event(i));
        }
        let file = std::fs::read_dir(&config.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let events = loop {
            let text = std::fs::read_to_string(&file).unwrap();
            // A write still under way may show in part: whole lines only.
            let whole = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
            let read = tessera_core::report::read_report(whole).unwrap();
            if read.events.len() == 2_000 || Instant::now() > deadline {
                break read.events;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(events.len(), 2_000);
        assert_eq!(log.dropped(), 0);
        log.close();
    }

    /// Files rotate at their size limit; every closed file has a checksum
    /// that matches it and a chain that reads back; no event is lost.
    #[test]
    fn files_rotate_and_every_closed_file_is_checksummed() {
        let dir = tempfile::tempdir().unwrap();
        let config = ReportConfig {
            enabled: true,
            dir: dir.path().join("report"),
            rotate_bytes: 1_000,
            rotate_ms: 3_600_000,
        };
        let log = ReportLog::start(&config, "pool", "A", 1_000).unwrap();
        for i in 0..40 {
            log.record(event(i));
            if i % 5 == 0 {
                // Let the writer take a batch, so files fill and rotate.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        log.close();
        log.record(event(99)); // after the close: nothing, and no panic
        let mut files: Vec<PathBuf> = std::fs::read_dir(&config.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        assert!(files.len() >= 2, "rotated: {files:?}");
        let mut users = Vec::new();
        for file in &files {
            let bytes = std::fs::read(file).unwrap();
            let sum = std::fs::read_to_string(file.with_extension("jsonl.sha256")).unwrap();
            assert_eq!(
                sum.split_whitespace().next().unwrap(),
                hex::encode(Sha256::digest(&bytes)),
                "{}",
                file.display()
            );
            let read =
                tessera_core::report::read_report(std::str::from_utf8(&bytes).unwrap()).unwrap();
            assert_eq!(read.header.server, "A");
            users.extend(read.events.into_iter().map(|e| e.user.to_string()));
        }
        users.sort_by_key(|u| u.trim_start_matches("user").parse::<u32>().unwrap());
        let expected: Vec<String> = (0..40).map(|i| format!("user{i}")).collect();
        assert_eq!(users, expected);
    }
}
