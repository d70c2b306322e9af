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

/// The framer. Holds the bytes of the event that has not ended yet.
#[derive(Debug, Default)]
pub struct SseFramer {
    /// Bytes of the unfinished event.
    tail: Vec<u8>,
    /// The previous chunk ended an event with `\r`: a `\n` first in the next chunk still
    /// belongs to that event (and goes where it went).
    after_cr: Option<Verdict>,
}

impl SseFramer {
    /// Feeds a chunk. `on_event` sees each event that completes; the returned bytes are
    /// what to send on now: the kept events, whole. The unfinished tail is held back (no
    /// client can use half an event).
    pub fn push(&mut self, chunk: &[u8], on_event: &mut dyn FnMut(&Event) -> Verdict) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len().saturating_add(self.tail.len()));
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
        let scan_from = buf.len();
        buf.extend_from_slice(chunk);

        let mut event_start = 0;
        let mut pos = event_start_of_scan(&buf, scan_from);
        while let Some(end) = find_event_end(&buf, &mut pos) {
            let raw = buf.get(event_start..end).unwrap_or(&[]);
            let event = Event {
                data: data_of(raw),
                raw,
            };
            let verdict = on_event(&event);
            if verdict == Verdict::Keep {
                out.extend_from_slice(raw);
            }
            // An event ended by a lone `\r` at the very end: its `\n` may come next.
            if end == buf.len() && buf.last() == Some(&b'\r') {
                self.after_cr = Some(verdict);
            }
            event_start = end;
        }
        self.tail = buf
            .get(event_start..)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        out
    }

    /// The stream ended: an unterminated last event is still an event.
    pub fn finish(&mut self, on_event: &mut dyn FnMut(&Event) -> Verdict) -> Vec<u8> {
        let tail = std::mem::take(&mut self.tail);
        self.after_cr = None;
        if tail.is_empty() {
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
}

/// Where to resume scanning: a line ending at the old tail's end may pair with new bytes,
/// so step back to the start of the tail's last line.
fn event_start_of_scan(buf: &[u8], scan_from: usize) -> usize {
    let head = buf.get(..scan_from).unwrap_or(&[]);
    match head.iter().rposition(|&b| b != b'\r' && b != b'\n') {
        Some(i) => {
            // Start of the line containing position i.
            head.get(..i)
                .and_then(|h| h.iter().rposition(|&b| b == b'\r' || b == b'\n'))
                .map_or(0, |p| p.saturating_add(1))
        }
        None => 0,
    }
}

/// Finds the end (exclusive) of the next event at or after `pos`: the end of an empty line.
/// Advances `pos` past it. Line endings are `\r\n`, `\n` or `\r`.
fn find_event_end(buf: &[u8], pos: &mut usize) -> Option<usize> {
    let mut line_empty = true;
    let mut i = *pos;
    while let Some(&b) = buf.get(i) {
        match b {
            b'\r' | b'\n' => {
                let mut end = i.saturating_add(1);
                if b == b'\r' && buf.get(end) == Some(&b'\n') {
                    end = end.saturating_add(1);
                } else if b == b'\r' && end == buf.len() && !line_empty {
                    // `\r` last in the buffer ends a non-empty line; if `\n` follows later it
                    // is that same line ending. Wait for it before deciding.
                    return None;
                }
                if line_empty {
                    *pos = end;
                    return Some(end);
                }
                line_empty = true;
                i = end;
            }
            _ => {
                line_empty = false;
                i = i.saturating_add(1);
            }
        }
    }
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
    fn complete_events_are_released_at_once() {
        let mut f = SseFramer::default();
        let mut keep = |_: &Event| Verdict::Keep;
        assert_eq!(f.push(b"data: 1\n\ndata: 2", &mut keep), b"data: 1\n\n");
        assert_eq!(f.push(b"\n\n", &mut keep), b"data: 2\n\n");
        assert_eq!(f.push(b"", &mut keep), b"");
        assert_eq!(f.finish(&mut keep), b"");
    }
}
