//! Bringing the state to the journal's end: the writer lock, the fold (from the in-process
//! cache, the head snapshot or the start) and the head snapshot itself.

use super::{
    Cache, FileStat, Folded, FsError, HEAD_BYTES_MAX, HEAD_MAGIC, HEAD_VERSION, HEAD_WINDOW_BYTES, Head, Journal,
    JournalError, LineReader, LiveState, Path, Replay, ReusableLock, STATE_DIR, Storage, StorageRead, io, with_suffix,
};

impl<S: Storage + Clone> Journal<S> {
    /// Runs `operation` under the writer lock with the state folded to the end of the journal.
    pub(super) fn locked<T>(
        &self,
        operation: impl FnOnce(&Self, &mut Cache<S>) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(dir) = self.lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            self.ensure_dir(dir)?;
        }
        let lock = match cache.lock.take() {
            Some(lock) => lock,
            None => ReusableLock::open(&self.lock_path)?,
        };
        self.under(lock, &mut cache, operation)
    }

    /// The journal's directory must exist, except keel's own state directory ([`STATE_DIR`]),
    /// which comes into being with the first operation, in a parent that exists. Creating
    /// whatever directories a path names would let a mistyped journal path start a journal no
    /// one else reads, whose grants exclude no one.
    pub(super) fn ensure_dir(&self, dir: &Path) -> Result<(), JournalError> {
        // On the real disk, as it always was: through `self.storage` these two calls would become
        // operations the crash and fault tests count and cut, and the simulator would need the
        // directory too.
        match keel_fs::OsStorage.path_stat(dir) {
            Ok(stat) if stat.kind == keel_fs::seam::FileKind::Dir => return Ok(()),
            Ok(_) => return Err(FsError::Invalid { path: dir.to_owned(), reason: "not a directory" }.into()),
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(FsError::io("stat", dir, e).into()),
            Err(_) if dir.file_name() != Some(STATE_DIR.as_ref()) => {
                return Err(FsError::Invalid {
                    path: dir.to_owned(),
                    reason: "the journal's directory does not exist (keel creates only a `.keel` directory, \
                             in an existing one)",
                }
                .into());
            }
            Err(_) => {}
        }
        match keel_fs::OsStorage.create_dir(dir) {
            Ok(()) => {
                // The new name must outlive a power loss, or so could every grant made in it. A
                // file system that cannot fsync a directory promises no more whatever we do.
                let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                let _status = keel_fs::seam::dir_sync_status(self.storage.sync_dir(parent))
                    .map_err(|e| FsError::io("fsync directory", parent, e))?;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(FsError::io("create directory", dir, e).into()),
        }
    }

    /// Runs a read-only `operation` on the state folded to the end of the journal, creating
    /// nothing and taking no lock, so a reader never waits behind a writer's fdatasync and never
    /// needs write access. The fold sees the journal as of one moment, which is all a locked read
    /// tells once its lock is released: appends are whole lines (one still in flight is a
    /// fragment without its `\n`, left out as a torn tail and read again next time), and
    /// compaction replaces the file by rename (the fold reads the file it opened, by that file's
    /// own identity and length).
    pub(super) fn observed<T>(
        &self,
        operation: impl FnOnce(&Self, &mut Cache<S>) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.fold(&mut cache)?;
        operation(self, &mut cache)
    }

    /// Takes `lock`, folds and runs `operation`, and keeps the lock's file open in the cache.
    pub(super) fn under<T>(
        &self,
        mut lock: ReusableLock,
        cache: &mut Cache<S>,
        operation: impl FnOnce(&Self, &mut Cache<S>) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let result = match lock.acquire_timeout(self.options.lock_timeout_ms) {
            Ok(_guard) => self.fold(cache).and_then(|()| operation(self, cache)),
            Err(error) => Err(error.into()),
        };
        cache.lock = Some(lock);
        result
    }

    pub(super) fn stat(&self) -> Result<Option<FileStat>, JournalError> {
        match self.storage.path_stat(&self.path) {
            Ok(stat) => Ok(Some(stat)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FsError::io("stat", &self.path, e).into()),
        }
    }

    /// Brings `cache.folded` to the end of the journal, from the cache, the head, or the start.
    pub(super) fn fold(&self, cache: &mut Cache<S>) -> Result<(), JournalError> {
        self.fold_observed(cache, &mut |_| {})
    }

    /// [`fold`](Self::fold), telling `progress` how far into the journal it has read.
    pub(super) fn fold_observed(
        &self,
        cache: &mut Cache<S>,
        progress: &mut dyn FnMut(crate::read::Progress),
    ) -> Result<(), JournalError> {
        let Some(stat) = self.stat()? else {
            cache.folded = Some(Folded {
                state: LiveState::new(),
                safe_offset: 0,
                safe_lines: 0,
                end_offset: 0,
                dev: 0,
                ino: 0,
                tail: None,
            });
            return Ok(());
        };
        let (file, stat) = match cache.reader.take() {
            Some((file, dev, ino)) if dev == stat.dev && ino == stat.ino => (file, stat),
            _ => {
                // The file opened may not be the one just stat'ed (a compaction renamed a new one
                // in between, which readers do not wait for): read it as what it is.
                let file = self.storage.open_read(&self.path).map_err(|e| FsError::io("open", &self.path, e))?;
                let opened = self.storage.file_stat(&file).map_err(|e| FsError::io("stat", &self.path, e))?;
                (file, opened)
            }
        };
        let resume = match cache.folded.take() {
            Some(f) if f.dev == stat.dev && f.ino == stat.ino && stat.len >= f.safe_offset => {
                Some((f.state, f.safe_offset, f.safe_lines))
            }
            _ => None,
        };
        let (state, offset, lines) = match resume {
            Some(resume) => resume,
            None => self.load_head(&stat, &file, cache).unwrap_or_default(),
        };
        let mut replay = Replay::resume(state, lines);
        let reader = StorageRead::new(&self.storage, &file, offset);
        let mut lines_reader =
            LineReader::new(reader, &self.path, offset).with_expected_bytes(stat.len.saturating_sub(offset));
        let (mut safe_offset, mut safe_lines, mut terminated) = (offset, lines, true);
        let mut reporter = crate::read::Reporter::new(progress, stat.len);
        while let Some(pushed) = crate::read::push_next(&mut lines_reader, &mut replay)? {
            terminated = pushed.whole;
            reporter.at(pushed.end);
            // The cache resumes where the state ends: after this line, or at its start while it
            // is held back (an unreadable last line may yet prove a torn write). Everything
            // before a held line is in the state, so resuming before it would fold it twice.
            (safe_offset, safe_lines) = match replay.pending() {
                None => (pushed.end, replay.lines()),
                Some(_) => (pushed.start, replay.lines().saturating_sub(1)),
            };
        }
        let end_offset = lines_reader.offset();
        reporter.finish(end_offset);
        drop(lines_reader);
        cache.reader = Some((file, stat.dev, stat.ino));
        let tail = replay.pending().cloned().map(|bad| (bad, !terminated));
        let replayed = replay.finish();
        cache.folded = Some(Folded {
            state: replayed.state,
            safe_offset,
            safe_lines,
            end_offset,
            dev: stat.dev,
            ino: stat.ino,
            tail,
        });
        Ok(())
    }

    /// The BLAKE3 of the journal's bytes `[start, end)` (at most [`HEAD_WINDOW_BYTES`] of them).
    pub(super) fn hash_range(&self, file: &S::File, start: u64, end: u64) -> io::Result<String> {
        let mut window = vec![0u8; (end - start) as usize];
        let mut filled = 0;
        while filled < window.len() {
            let n = self.storage.read_at(file, start + filled as u64, &mut window[filled..])?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "journal shorter than its head"));
            }
            filled += n;
        }
        Ok(blake3::hash(&window).to_hex().to_string())
    }

    /// The hashes that tie a head at `offset` to this journal: of the bytes just before it, and of
    /// the journal's first bytes (which a rewrite changes however it ends).
    pub(super) fn place_hashes(&self, file: &S::File, offset: u64) -> io::Result<(String, String)> {
        let window = self.hash_range(file, offset.saturating_sub(HEAD_WINDOW_BYTES), offset)?;
        let prefix = self.hash_range(file, 0, offset.min(HEAD_WINDOW_BYTES))?;
        Ok((window, prefix))
    }

    /// The head snapshot, if its bytes are whole and it describes this very journal; anything
    /// else means "replay" (see [`Head`]).
    pub(super) fn load_head(
        &self,
        stat: &FileStat,
        file: &S::File,
        cache: &mut Cache<S>,
    ) -> Option<(LiveState, u64, u64)> {
        let bytes = self.read_sidecar(&self.head_path, HEAD_BYTES_MAX)?;
        let newline = memchr::memchr(b'\n', &bytes)?;
        let (header, body) = (std::str::from_utf8(&bytes[..newline]).ok()?, &bytes[newline + 1..]);
        let hash = header.strip_prefix(HEAD_MAGIC)?.strip_prefix(' ')?;
        if hash != blake3::hash(body).to_hex().as_str() {
            return None;
        }
        let head: Head = serde_json::from_slice(body).ok()?;
        let valid = head.version == HEAD_VERSION
            && head.dev == stat.dev
            && head.ino == stat.ino
            && head.offset <= stat.len
            && self.place_hashes(file, head.offset).ok()? == (head.window_blake3.clone(), head.prefix_blake3.clone());
        if !valid {
            return None;
        }
        cache.head_offset = head.offset;
        cache.last_compaction = head.last_compaction;
        Some((LiveState::from_snapshot(head.state), head.offset, head.lines))
    }

    pub(super) fn write_head(&self, cache: &mut Cache<S>) -> Result<(), JournalError> {
        let folded = cache.folded.as_ref().expect("folded before writing a head");
        let file = self.storage.open_read(&self.path).map_err(|e| FsError::io("open", &self.path, e))?;
        let (window_blake3, prefix_blake3) =
            self.place_hashes(&file, folded.safe_offset).map_err(|e| FsError::io("read", &self.path, e))?;
        let head = Head {
            version: HEAD_VERSION,
            dev: folded.dev,
            ino: folded.ino,
            offset: folded.safe_offset,
            lines: folded.safe_lines,
            window_blake3,
            prefix_blake3,
            state: folded.state.snapshot(),
            last_compaction: cache.last_compaction.clone(),
        };
        let body = serde_json::to_vec(&head).expect("head snapshots serialise");
        let mut bytes = format!("{HEAD_MAGIC} {}\n", blake3::hash(&body).to_hex()).into_bytes();
        bytes.extend_from_slice(&body);
        self.replace_volatile(&self.head_path, &bytes)?;
        cache.head_offset = folded.safe_offset;
        Ok(())
    }

    /// Replaces `path` by rename, without fsync: for derived data only (the head snapshot), which
    /// a crash may lose or tear, because every reader validates it against the journal and falls
    /// back to replaying when it does not match.
    pub(super) fn replace_volatile(&self, path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
        let temp = with_suffix(path, &format!(".tmp.{}", std::process::id()));
        let _ = self.storage.remove_file(&temp);
        let mut file = self.storage.create_new(&temp).map_err(|e| FsError::io("create", &temp, e))?;
        let written = self.storage.write_all(&mut file, bytes).and_then(|()| self.storage.rename(&temp, path));
        if let Err(e) = written {
            let _ = self.storage.remove_file(&temp);
            return Err(FsError::io("write head snapshot", path, e).into());
        }
        Ok(())
    }

    pub(super) fn folded(cache: &Cache<S>) -> &Folded {
        cache.folded.as_ref().expect("operations run on a folded cache")
    }
}
