//! Reading pages of events and transcripts, without a lock.

use super::{
    DamagedLine, DeserializeOwned, Event, EventCursor, EventPage, FsRuntimeStore, Keyed, Log, PAGE_LIMIT_CEILING, Page,
    Result, Step, Storage, StoreError, TranscriptEntry, TranscriptPage, WorkerRef,
};

impl<S: Storage + Clone> FsRuntimeStore<S> {
    /// Reads up to `limit` records of `log` from key `start`, validating each.
    pub(super) fn read_page<R: DeserializeOwned + Keyed>(
        storage: &S,
        log: &Log,
        start: u64,
        limit: u64,
        op: &'static str,
        validate: &dyn Fn(&R, u64) -> Result<()>,
    ) -> Result<Page<R>> {
        let mut scanner = log.scanner_near::<R, S>(storage, start, op)?.0;
        while scanner.next_key() < start {
            if !scanner.skip(op)? {
                // Past the end: an empty last page. Its `next_key` is the real end, never
                // `start`: a follower that took `start` as "up to date" would skip every record
                // appended from the real end up to it.
                return Ok(Page { next_key: scanner.next_key(), ..Page::default() });
            }
        }
        let mut page = Page { items: Vec::with_capacity(limit.min(PAGE_LIMIT_CEILING) as usize), ..Page::default() };
        // A damaged line counts toward the limit (it stands for one key) and is named, never
        // passed over in silence; the records around it still read.
        loop {
            if (page.items.len() + page.damaged.len()) as u64 >= limit {
                page.has_more = matches!(scanner.peek(op)?, Step::Record { .. } | Step::Damaged(_));
                break;
            }
            match scanner.next(op)? {
                Step::Record { record, line, .. } => {
                    validate(&record, line)?;
                    page.items.push(record);
                }
                Step::Damaged(damage) => {
                    page.damaged.push(DamagedLine { line: damage.line, key: damage.key, excerpt: damage.excerpt });
                }
                Step::Torn(_) | Step::End => break,
            }
        }
        page.next_key = scanner.next_key();
        Ok(page)
    }

    /// One page of events from `cursor` (the start of the log when `None`): at most `limit`
    /// events, refusing a `limit` of 0 or above `max_limit` (or the runtime's `page_limit_max`)
    /// and a cursor of another runtime. A cursor past the end of the log reads an empty page
    /// (`has_more` false) whose cursor is the log's real end. Seeks through the index: the cost
    /// does not grow with the cursor's position.
    pub fn read_events(&self, cursor: Option<&EventCursor>, limit: u64, max_limit: u64) -> Result<EventPage> {
        const OP: &str = "read events";
        if let Some(cursor) = cursor
            && cursor.runtime_id != self.runtime_id
        {
            return Err(StoreError::WrongRuntimeCursor {
                op: OP,
                expected: self.runtime_id.clone(),
                found: cursor.runtime_id.clone(),
            });
        }
        self.check_limit(limit, max_limit, OP)?;
        let start = cursor.map_or(1, |c| c.next_event_id.max(1));
        let page = Self::read_page::<Event>(&self.storage, &self.events.log, start, limit, OP, &|event, line| {
            self.validate_event(event, line, OP)
        })?;
        Ok(EventPage {
            events: page.items,
            cursor: EventCursor { runtime_id: self.runtime_id.clone(), next_event_id: page.next_key },
            has_more: page.has_more,
            damaged: page.damaged,
        })
    }

    /// One page of a worker's transcript from entry `start` (0-based): at most `limit` entries,
    /// refusing a `limit` of 0 or above `max_limit` (or the runtime's `page_limit_max`) and a
    /// worker of another runtime. A `start` past the end of the transcript reads an empty page
    /// (`next_start` none; `total_items` says where the end is).
    pub fn read_transcript(
        &self,
        worker_ref: &WorkerRef,
        start: u64,
        limit: u64,
        max_limit: u64,
    ) -> Result<TranscriptPage> {
        const OP: &str = "read transcript";
        self.check_worker_ref(worker_ref, OP)?;
        self.check_limit(limit, max_limit, OP)?;
        let worker_id = worker_ref.worker_id.as_str();
        self.read_worker(worker_id, OP)?;
        let log = self.transcript_log(worker_id, OP)?;
        let tail = self.scan_transcript_tail(&log, worker_id, OP)?;
        let page = Self::read_page::<TranscriptEntry>(&self.storage, &log, start, limit, OP, &|entry, line| {
            self.validate_entry(entry, worker_id, &log.path, line, OP)
        })?;
        let next_start = page.has_more.then_some(page.next_key);
        Ok(TranscriptPage { items: page.items, total_items: tail.next_key, next_start, damaged: page.damaged })
    }
}
