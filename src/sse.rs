//! Server-sent events framed at the byte level, across chunk boundaries: an event can be
//! split anywhere (inside `\r\n`, inside a UTF-8 character) and a chunk can hold many.
//! Events are handed to a caller that may drop them; every other byte goes out unchanged.

/// What to do with a complete event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Drop,
}

/// A complete event, as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `data:` lines joined with `\n` (one leading space removed from each, as the SSE
    /// spec says); empty when the event has none.
    pub data: Vec<u8>,
    /// The event's raw bytes, terminator included.
    pub raw: &'a [u8],
}

/// The longest event the framer holds back to parse. Past it, the event's bytes pass
/// through unparsed as they come, and framing resumes with the next event: an upstream
/// that never ends a line cannot make the filter hold its stream in memory.
pub const MAX_EVENT: usize = 1 << 20;

/// Where scanning stopped: every byte before `pos` has been looked at.
#[derive(Debug, Clone, Copy)]
struct Scan {
    pos: usize,
    /// The line being scanned has no bytes yet.
    line_empty: bool,
}

impl Default for Scan {
    fn default() -> Self {
        Scan {
            pos: 0,
            line_empty: true,
        }
    }
}

/// The framer. Holds the bytes of the event that has not ended yet, and where scanning
/// them stopped, so no byte is scanned twice.
#[derive(Debug, Default)]
pub struct SseFramer {
    /// Bytes of the unfinished event (while skipping: at most a `\r` not yet scanned).
    tail: Vec<u8>,
    scan: Scan,
    /// The previous chunk ended an event with `\r`: a `\n` first in the next chunk still
    /// belongs to that event (and goes where it went).
    after_cr: Option<Verdict>,
    /// The current event outgrew [`MAX_EVENT`]: its bytes pass through unparsed.
    skipping: bool,
    /// Bytes scanned so far (each once).
    scanned: u64,
}

impl SseFramer {
    /// Feeds a chunk. `on_event` sees each event that completes; the returned bytes are
    /// what to send on now: the kept events, whole. The unfinished tail is held back (no
    /// client can use half an event).
    pub fn push(&mut self, chunk: &[u8], on_event: &mut dyn FnMut(&Event) -> Verdict) -> Vec<u8> {
        if chunk.is_empty() {
            // Nothing new: an event that ended in `\r` may still see its `\n` next.
            return Vec::new();
        }
        let mut out = Vec::with_capacity(chunk.len());
        let mut chunk = chunk;
        if let Some(verdict) = self.after_cr.take() {
            if let Some((b'\n', rest)) = chunk.split_first() {
                if verdict == Verdict::Keep {
                    out.push(b'\n');
                }
                chunk = rest;
            }
        }
        let mut buf = std::mem::take(&mut self.tail);
        buf.extend_from_slice(chunk);
        let mut event_start = 0;
        loop {
            let from = self.scan.pos;
            let found = find_event_end(&buf, &mut self.scan);
            let scanned = u64::try_from(self.scan.pos.saturating_sub(from)).unwrap_or(0);
            self.scanned = self.scanned.saturating_add(scanned);
            let Some(end) = found else {
                break;
            };
            let raw = buf.get(event_start..end).unwrap_or(&[]);
            let verdict = if self.skipping {
                // Passed on unparsed as it came; only its end is news.
                self.skipping = false;
                Verdict::Keep
            } else {
                on_event(&Event {
                    data: data_of(raw),
                    raw,
                })
            };
            if verdict == Verdict::Keep {
                out.extend_from_slice(raw);
            }
            // An event ended by a lone `\r` at the very end: its `\n` may come next.
            if end == buf.len() && buf.last() == Some(&b'\r') {
                self.after_cr = Some(verdict);
            }
            event_start = end;
        }
        // Past the cap (or already skipping), what was scanned goes out now, unparsed.
        if self.skipping || buf.len().saturating_sub(event_start) > MAX_EVENT {
            self.skipping = true;
            let scanned_to = self.scan.pos.max(event_start);
            out.extend_from_slice(buf.get(event_start..scanned_to).unwrap_or(&[]));
            event_start = scanned_to;
        }
        buf.drain(..event_start.min(buf.len()));
        self.scan.pos = self.scan.pos.saturating_sub(event_start);
        self.tail = buf;
        out
    }

    /// The stream ended: an unterminated last event is still an event.
    pub fn finish(&mut self, on_event: &mut dyn FnMut(&Event) -> Verdict) -> Vec<u8> {
        let tail = std::mem::take(&mut self.tail);
        self.after_cr = None;
        self.scan = Scan::default();
        let skipping = std::mem::take(&mut self.skipping);
        if tail.is_empty() || skipping {
            return tail;
        }
        let event = Event {
            data: data_of(&tail),
            raw: &tail,
        };
        match on_event(&event) {
            Verdict::Keep => tail.clone(),
            Verdict::Drop => Vec::new(),
        }
    }

    /// Bytes held back now (an unfinished event).
    pub fn held(&self) -> usize {
        self.tail.len()
    }

    /// Bytes scanned so far: each byte of the stream once, however it is chunked.
    pub fn scanned(&self) -> u64 {
        self.scanned
    }
}

/// Finds the end (exclusive) of the next event from where `scan` stopped: the end of an
/// empty line. Line endings are `\r\n`, `\n` or `\r`. When the buffer runs out, `scan`
/// keeps where to resume (a `\r` last in the buffer is left for later: a `\n` may follow).
fn find_event_end(buf: &[u8], scan: &mut Scan) -> Option<usize> {
    let mut i = scan.pos;
    while let Some(&b) = buf.get(i) {
        match b {
            b'\r' | b'\n' => {
                let mut end = i.saturating_add(1);
                if b == b'\r' && buf.get(end) == Some(&b'\n') {
                    end = end.saturating_add(1);
                } else if b == b'\r' && end == buf.len() && !scan.line_empty {
                    // `\r` last in the buffer ends a non-empty line; if `\n` follows later it
                    // is that same line ending. Wait for it before deciding.
                    scan.pos = i;
                    return None;
                }
                if scan.line_empty {
                    scan.pos = end;
                    return Some(end);
                }
                scan.line_empty = true;
                i = end;
            }
            _ => {
                scan.line_empty = false;
                i = i.saturating_add(1);
            }
        }
    }
    scan.pos = i;
    None
}

/// The `data:` field values of an event, joined with `\n`.
fn data_of(raw: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut first = true;
    for line in raw.split(|&b| b == b'\n' || b == b'\r') {
        let value = if line == b"data" {
            Some(&[][..])
        } else {
            line.strip_prefix(b"data:")
                .map(|v| v.strip_prefix(b" ").unwrap_or(v))
        };
        if let Some(v) = value {
            if !first {
                data.push(b'\n');
            }
            first = false;
            data.extend_from_slice(v);
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in the given pieces; returns (output bytes, data of every event seen).
    fn run(pieces: &[&[u8]], drop: &dyn Fn(&[u8]) -> bool) -> (Vec<u8>, Vec<String>) {
        let mut f = SseFramer::default();
        let mut seen = Vec::new();
        let mut out = Vec::new();
        let mut on = |e: &Event| {
            seen.push(String::from_utf8(e.data.clone()).unwrap());
            if drop(&e.data) {
                Verdict::Drop
            } else {
                Verdict::Keep
            }
        };
        for p in pieces {
            out.extend(f.push(p, &mut on));
        }
        out.extend(f.finish(&mut on));
        (out, seen)
    }

    const FIXTURES: &[&str] = &[
        "data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n",
        "data: {\"a\":1}\r\n\r\ndata: {\"b\":2}\r\n\r\ndata: [DONE]\r\n\r\n",
        "data: {\"a\":1}\r\rdata: {\"b\":2}\r\r",
        ": keep-alive comment\n\nevent: message\nid: 7\ndata: {\"x\":\"h\u{e9}llo \u{1f600}\"}\n\n",
        "data: line one\ndata: line two\n\ndata:nospace\n\n",
        "data: {\"usage\":{\"total_tokens\":9},\"choices\":[]}\n\ndata: [DONE]\n\n",
        "data: {\"last\":true}\n\ndata: unterminated",
        "\n\ndata: {\"after\":\"blank lines\"}\n\n",
    ];

    fn expected_data(fixture: &str) -> Vec<String> {
        run(&[fixture.as_bytes()], &|_| false).1
    }

    #[test]
    fn whole_fixtures() {
        assert_eq!(
            expected_data(FIXTURES[0]),
            ["{\"a\":1}", "{\"b\":2}", "[DONE]"]
        );
        assert_eq!(
            expected_data(FIXTURES[1]),
            ["{\"a\":1}", "{\"b\":2}", "[DONE]"]
        );
        assert_eq!(expected_data(FIXTURES[2]), ["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(
            expected_data(FIXTURES[3]),
            ["", "{\"x\":\"h\u{e9}llo \u{1f600}\"}"]
        );
        assert_eq!(
            expected_data(FIXTURES[4]),
            ["line one\nline two", "nospace"]
        );
        assert_eq!(
            expected_data(FIXTURES[6]),
            ["{\"last\":true}", "unterminated"]
        );
        // Each blank line ends an (empty) event.
        assert_eq!(
            expected_data(FIXTURES[7]),
            ["", "", "{\"after\":\"blank lines\"}"]
        );
    }

    #[test]
    fn every_two_way_split_gives_the_same_events_and_bytes() {
        for fixture in FIXTURES {
            let bytes = fixture.as_bytes();
            let want = expected_data(fixture);
            for cut in 0..=bytes.len() {
                let (a, b) = bytes.split_at(cut);
                let (out, seen) = run(&[a, b], &|_| false);
                assert_eq!(out, bytes, "bytes changed, cut {cut} of {fixture:?}");
                assert_eq!(seen, want, "events differ, cut {cut} of {fixture:?}");
            }
        }
    }

    #[test]
    fn empty_chunks_change_nothing() {
        for fixture in FIXTURES {
            let bytes = fixture.as_bytes();
            for cut in 0..=bytes.len() {
                let (a, b) = bytes.split_at(cut);
                let (out, seen) = run(&[a, b"", b"", b], &|_| false);
                assert_eq!(out, bytes, "bytes changed, cut {cut} of {fixture:?}");
                assert_eq!(seen, expected_data(fixture), "cut {cut} of {fixture:?}");
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        for fixture in FIXTURES {
            let pieces: Vec<&[u8]> = fixture.as_bytes().chunks(1).collect();
            let (out, seen) = run(&pieces, &|_| false);
            assert_eq!(out, fixture.as_bytes());
            assert_eq!(seen, expected_data(fixture), "{fixture:?}");
        }
    }

    #[test]
    fn dropping_an_event_removes_exactly_its_bytes_at_any_split() {
        let cases = [
            (
                "data: {\"a\":1}\n\ndata: {\"usage\":1}\n\ndata: [DONE]\n\n",
                "data: {\"a\":1}\n\ndata: [DONE]\n\n",
            ),
            (
                "data: {\"a\":1}\r\n\r\ndata: {\"usage\":1}\r\n\r\ndata: [DONE]\r\n\r\n",
                "data: {\"a\":1}\r\n\r\ndata: [DONE]\r\n\r\n",
            ),
            (
                "data: {\"a\":1}\r\rdata: {\"usage\":1}\r\r",
                "data: {\"a\":1}\r\r",
            ),
            (
                "data: {\"a\":1}\n\ndata: {\"usage\":1}",
                "data: {\"a\":1}\n\n",
            ),
        ];
        let is_usage = |d: &[u8]| d.starts_with(b"{\"usage\"");
        for (input, want) in cases {
            let bytes = input.as_bytes();
            for cut in 0..=bytes.len() {
                let (a, b) = bytes.split_at(cut);
                let (out, _) = run(&[a, b], &is_usage);
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    want,
                    "cut {cut} of {input:?}"
                );
            }
        }
    }

    #[test]
    fn an_endless_line_is_scanned_once_and_passes_through_past_the_cap() {
        let mut f = SseFramer::default();
        let mut seen = Vec::new();
        let mut on = |e: &Event| {
            seen.push(e.data.len());
            Verdict::Keep
        };
        let piece = vec![b'x'; 4096];
        let mut out = b"data: ".to_vec();
        let mut input = b"data: ".to_vec();
        out.clear();
        out.extend(f.push(b"data: ", &mut on));
        for _ in 0..(3 * MAX_EVENT / piece.len()) {
            input.extend_from_slice(&piece);
            out.extend(f.push(&piece, &mut on));
            assert!(f.held() <= MAX_EVENT.saturating_add(piece.len()));
        }
        assert_eq!(f.scanned(), input.len() as u64, "every byte scanned once");
        // The oversized event ends; the next one is framed and parsed again.
        out.extend(f.push(b"\n\ndata: {\"after\":1}\n\n", &mut on));
        input.extend_from_slice(b"\n\ndata: {\"after\":1}\n\n");
        out.extend(f.finish(&mut on));
        assert!(out == input, "every byte passed, in order");
        assert_eq!(
            seen,
            vec![11],
            "only the event after the oversized one was parsed"
        );
    }

    #[test]
    fn an_oversized_event_passes_whole_at_every_split_near_its_end() {
        let big = format!("data: {}\r\n\r\ndata: b\n\n", "y".repeat(MAX_EVENT + 10));
        let bytes = big.as_bytes();
        for cut in (bytes.len() - 20)..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            let (out, seen) = run(&[a, b], &|_| false);
            assert!(out == bytes, "cut {cut}");
            // Held back whole only when it completed within one chunk.
            assert_eq!(seen.last().map(String::as_str), Some("b"), "cut {cut}");
            assert!(seen.len() <= 2, "cut {cut}");
        }
    }

    #[test]
    fn complete_events_are_released_at_once() {
        let mut f = SseFramer::default();
        let mut keep = |_: &Event| Verdict::Keep;
        assert_eq!(f.push(b"data: 1\n\ndata: 2", &mut keep), b"data: 1\n\n");
        assert_eq!(f.push(b"\n\n", &mut keep), b"data: 2\n\n");
        assert_eq!(f.push(b"", &mut keep), b"");
        assert_eq!(f.finish(&mut keep), b"");
    }
}
