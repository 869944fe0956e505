//! Reads a job file on its own thread and hands prepared commands to the
//! printer task in batches: opening and reading a file (an SD card that
//! stalls, a network mount) never blocks an async worker.
//!
//! Per line nothing is allocated: a batch is one buffer of commands separated
//! by `\n`, and emptied buffers go back to the reader to be filled again.
//! The channel holds a few batches, so memory stays bounded whatever the
//! file's size. Dropping the [`JobReader`] (job cancelled) ends the thread at
//! its next send.

use super::job_file::JobFile;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use tokio::sync::mpsc;

/// Commands per batch, and bytes per batch buffer.
const BATCH_LINES: u64 = 64;
const BATCH_BYTES: usize = 4096;
/// Batches in flight between the thread and the task.
const BATCHES: usize = 4;

/// What the reader thread says.
pub(crate) enum ReaderMsg {
    Lines(Batch),
    /// The end of the file: every command was handed over.
    End,
    /// The file cannot be opened or a line is bad (the message says where).
    Failed(String),
}

pub(crate) struct Batch {
    text: Vec<u8>,
    first_index: u64,
}

/// The printer task's side: the current batch and the channel.
pub(crate) struct JobReader {
    rx: mpsc::Receiver<ReaderMsg>,
    recycle: std_mpsc::Sender<Vec<u8>>,
    current: Option<Batch>,
    cursor: usize,
    index: u64,
}

/// Starts a reader thread for `path`.
pub(crate) fn start(job_id: &str, path: PathBuf) -> Result<JobReader, std::io::Error> {
    let (tx, rx) = mpsc::channel(BATCHES);
    let (recycle, recycled) = std_mpsc::channel();
    std::thread::Builder::new()
        .name(format!("job {job_id}"))
        .spawn(move || read_file(path, tx, recycled))?;
    Ok(JobReader {
        rx,
        recycle,
        current: None,
        cursor: 0,
        index: 0,
    })
}

fn read_file(path: PathBuf, tx: mpsc::Sender<ReaderMsg>, recycled: std_mpsc::Receiver<Vec<u8>>) {
    let mut file = match JobFile::open(&path, None) {
        Ok(f) => f,
        Err(e) => {
            // The task may be gone already (job cancelled): nothing to tell.
            let _unheard = tx.blocking_send(ReaderMsg::Failed(e.to_string()));
            return;
        }
    };
    loop {
        let mut text = recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH_BYTES));
        text.clear();
        let mut first_index = None;
        let mut lines = 0;
        let mut end = false;
        while lines < BATCH_LINES && text.len() < BATCH_BYTES {
            match file.next_command() {
                Ok(Some((cmd, index))) => {
                    first_index.get_or_insert(index);
                    text.extend_from_slice(cmd.as_bytes());
                    text.push(b'\n');
                    lines += 1;
                }
                Ok(None) => {
                    end = true;
                    break;
                }
                Err(e) => {
                    let _unheard = tx.blocking_send(ReaderMsg::Failed(e.to_string()));
                    return;
                }
            }
        }
        if let Some(first_index) = first_index {
            let batch = Batch { text, first_index };
            if tx.blocking_send(ReaderMsg::Lines(batch)).is_err() {
                return; // the job ended: stop reading
            }
        }
        if end {
            let _unheard = tx.blocking_send(ReaderMsg::End);
            return;
        }
    }
}

impl JobReader {
    /// The next command of the current batch and its index in the file.
    pub(crate) fn next_line(&mut self) -> Option<(&str, u64)> {
        let batch = self.current.as_ref()?;
        let rest = batch.text.get(self.cursor..)?;
        let len = rest.iter().position(|&b| b == b'\n')?;
        let line = rest.get(..len)?;
        self.cursor += len + 1;
        let index = self.index;
        self.index += 1;
        // The reader wrote it from a `&str`: always valid UTF-8.
        std::str::from_utf8(line).ok().map(|cmd| (cmd, index))
    }

    /// Whether the current batch is used up (a new one is needed).
    pub(crate) fn needs_batch(&self) -> bool {
        self.current
            .as_ref()
            .is_none_or(|b| self.cursor >= b.text.len())
    }

    /// Takes a new batch, returning the old buffer to the reader.
    pub(crate) fn set_batch(&mut self, batch: Batch) {
        if let Some(old) = self.current.take() {
            // The reader may have finished: then the buffer is just freed.
            let _unneeded = self.recycle.send(old.text);
        }
        self.index = batch.first_index;
        self.cursor = 0;
        self.current = Some(batch);
    }

    /// The channel to wait on for the next message.
    pub(crate) fn channel(&mut self) -> &mut mpsc::Receiver<ReaderMsg> {
        &mut self.rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_cover_the_file_in_order() {
        let dir = std::env::temp_dir().join(format!("printgate-reader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("job.gcode");
        let text: String = (0..300).map(|i| format!("G1 X{i} ; c\n\n")).collect();
        std::fs::write(&path, text).unwrap();
        let mut r = start("t", path).unwrap();
        let mut got = Vec::new();
        loop {
            while let Some((cmd, i)) = r.next_line() {
                got.push((cmd.to_owned(), i));
            }
            assert!(r.needs_batch());
            match r.channel().recv().await.unwrap() {
                ReaderMsg::Lines(b) => r.set_batch(b),
                ReaderMsg::End => break,
                ReaderMsg::Failed(e) => panic!("{e}"),
            }
        }
        assert_eq!(got.len(), 300);
        for (i, (cmd, index)) in got.iter().enumerate() {
            assert_eq!(
                (cmd.as_str(), *index),
                (format!("G1 X{i}").as_str(), i as u64)
            );
        }
        let mut bad = start("t", dir.join("missing.gcode")).unwrap();
        let Some(ReaderMsg::Failed(e)) = bad.channel().recv().await else {
            panic!("expected a failure")
        };
        assert!(e.contains("cannot read G-code file"), "{e}");
    }
}
