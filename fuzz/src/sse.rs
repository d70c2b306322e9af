//! Target `sse`: `sse::SseFramer` against a line-by-line reading of the whole stream, under
//! any chunking, with and without dropped events.
//!
//! Oracles, for the chunking and the drop verdicts read from the control bytes:
//! - the whole stream in one chunk gives exactly the events of `reference` (events end at
//!   an empty line; lines end with `\r\n`, `\n` or `\r`; `data` is the `data:` field values
//!   joined with `\n`, one leading space removed; unterminated bytes at the end make one
//!   last event), their raw bytes cover the stream, and every byte goes out unchanged;
//! - any chunking (empty chunks included, unless `empty-chunks` is relaxed) gives the same
//!   events (same data; the same raw bytes, except that an event whose `\r\n` is split
//!   between chunks ends at the `\r`, its `\n` going where the event went), and every byte
//!   goes out unchanged;
//! - an event is handed over, and its bytes sent on, in the very `push` that completes it
//!   (nothing complete is held back, nothing incomplete goes out);
//! - with a `Drop` verdict for some events, exactly those events' bytes are missing from
//!   the output, at any chunking.

use arbitrary::Unstructured;
use envoy_ai_proxy::sse::{Event, SseFramer, Verdict};

use crate::input;

/// The fuzz target: one input, every oracle.
pub fn check(data: &[u8]) {
    let (control, payload) = input::split(data);
    let mut u = Unstructured::new(control);
    let chunks = input::chunks(&mut u, payload);
    let mask: u64 = u.arbitrary().unwrap_or(0);
    let drop = |i: usize| {
        if mask.rotate_right((i % 64) as u32) & 1 == 1 {
            Verdict::Drop
        } else {
            Verdict::Keep
        }
    };
    let keep = |_: usize| Verdict::Keep;

    let reference = reference(payload);
    let whole = Run::of(&[payload], &keep);
    check_run(payload, &reference, &[payload], &keep, &whole, true);
    check_run(
        payload,
        &reference,
        &chunks,
        &keep,
        &Run::of(&chunks, &keep),
        false,
    );
    check_run(
        payload,
        &reference,
        &chunks,
        &drop,
        &Run::of(&chunks, &drop),
        false,
    );
}

/// An event of the reference reading: its byte range and data, and whether an empty line
/// ended it (else it is the unterminated end of the stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefEvent {
    pub start: usize,
    pub end: usize,
    pub data: Vec<u8>,
    pub terminated: bool,
}

/// The events of a whole stream, read line by line as the SSE specification says (with
/// the framer's one documented difference: an unterminated last event is still an event).
pub fn reference(stream: &[u8]) -> Vec<RefEvent> {
    let mut events = Vec::new();
    let mut start = 0;
    let mut data: Option<Vec<u8>> = None;
    let mut pos = 0;
    let field = |line: &[u8], data: &mut Option<Vec<u8>>| {
        let value = if line == b"data" {
            Some(&b""[..])
        } else {
            line.strip_prefix(b"data:")
                .map(|v| v.strip_prefix(b" ").unwrap_or(v))
        };
        if let Some(v) = value {
            match data {
                Some(d) => {
                    d.push(b'\n');
                    d.extend_from_slice(v);
                }
                None => *data = Some(v.to_vec()),
            }
        }
    };
    while pos < stream.len() {
        let line_end = stream[pos..]
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .map_or(stream.len(), |i| pos + i);
        let line = &stream[pos..line_end];
        let next = match stream.get(line_end..) {
            Some([b'\r', b'\n', ..]) => line_end + 2,
            Some([_, ..]) => line_end + 1,
            _ => line_end,
        };
        if line.is_empty() {
            events.push(RefEvent {
                start,
                end: next,
                data: data.take().unwrap_or_default(),
                terminated: true,
            });
            start = next;
        } else {
            field(line, &mut data);
        }
        pos = next;
    }
    if start < stream.len() {
        events.push(RefEvent {
            start,
            end: stream.len(),
            data: data.take().unwrap_or_default(),
            terminated: false,
        });
    }
    events
}

/// What a framer did with a stream fed in chunks.
#[derive(Debug, Default)]
pub struct Run {
    /// Each event handed over: (data, raw).
    pub events: Vec<(Vec<u8>, Vec<u8>)>,
    /// Everything sent on, `finish` included.
    pub out: Vec<u8>,
    /// After each chunk: (bytes fed so far, events handed over, bytes sent on).
    pub progress: Vec<(usize, usize, usize)>,
}

impl Run {
    /// Feeds `chunks` to a new framer, `verdict` deciding by the event's index.
    pub fn of(chunks: &[&[u8]], verdict: &dyn Fn(usize) -> Verdict) -> Run {
        let mut framer = SseFramer::default();
        let mut run = Run::default();
        let mut fed = 0;
        for chunk in chunks {
            let events = &mut run.events;
            let out = framer.push(chunk, &mut |e: &Event| {
                events.push((e.data.clone(), e.raw.to_vec()));
                verdict(events.len() - 1)
            });
            run.out.extend(out);
            fed += chunk.len();
            run.progress.push((fed, run.events.len(), run.out.len()));
        }
        let events = &mut run.events;
        let out = framer.finish(&mut |e: &Event| {
            events.push((e.data.clone(), e.raw.to_vec()));
            verdict(events.len() - 1)
        });
        run.out.extend(out);
        run
    }
}

/// Checks one run against the reference. `whole`: the stream came in one chunk, so raw
/// bytes must match exactly.
pub fn check_run(
    stream: &[u8],
    reference: &[RefEvent],
    chunks: &[&[u8]],
    verdict: &dyn Fn(usize) -> Verdict,
    run: &Run,
    whole: bool,
) {
    let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
    let ctx = || {
        format!(
            "chunks of {sizes:?}, stream {:?}",
            String::from_utf8_lossy(stream)
        )
    };
    assert_eq!(
        run.events.len(),
        reference.len(),
        "{} events instead of {}; {}",
        run.events.len(),
        reference.len(),
        ctx()
    );
    for (i, ((data, raw), r)) in run.events.iter().zip(reference).enumerate() {
        let want = &stream[r.start..r.end];
        assert_eq!(data, &r.data, "data of event {i}; {}", ctx());
        let split_crlf = !whole && want.ends_with(b"\r\n") && raw[..] == want[..want.len() - 1];
        assert!(
            raw[..] == want[..] || split_crlf,
            "raw bytes of event {i}: {:?} instead of {:?}; {}",
            String::from_utf8_lossy(raw),
            String::from_utf8_lossy(want),
            ctx()
        );
    }
    let kept: Vec<u8> = reference
        .iter()
        .enumerate()
        .filter(|(i, _)| verdict(*i) == Verdict::Keep)
        .flat_map(|(_, r)| stream[r.start..r.end].iter().copied())
        .collect();
    assert!(
        run.out == kept,
        "sent on {:?} instead of {:?}; {}",
        String::from_utf8_lossy(&run.out),
        String::from_utf8_lossy(&kept),
        ctx()
    );
    // Timeliness: after `fed` bytes, the events that ended within them are out.
    let (mut want_events, mut want_out) = (0, 0);
    // Where the `\n` of a kept event released at its `\r` is: it goes out once fed.
    let mut held: Option<usize> = None;
    for &(fed, events, out) in &run.progress {
        if held.is_some_and(|at| at < fed) {
            held = None;
            want_out += 1;
        }
        while let Some(r) = reference.get(want_events) {
            let done = r.end <= fed;
            let split = r.end == fed + 1 && stream[r.start..r.end].ends_with(b"\r\n");
            if !r.terminated || !(done || split) {
                break;
            }
            if verdict(want_events) == Verdict::Keep {
                want_out += r.end - r.start - usize::from(split);
                held = split.then_some(fed);
            }
            want_events += 1;
        }
        assert_eq!(
            (events, out),
            (want_events, want_out),
            "after {fed} bytes: (events handed over, bytes sent on); {}",
            ctx()
        );
    }
}

/// The oracles themselves can fail: each is shown a wrong run.
#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"data: a\r\n\r\ndata: b\n\n: c";
    const KEEP: &dyn Fn(usize) -> Verdict = &|_| Verdict::Keep;

    fn good() -> Run {
        Run::of(&[&STREAM[..10], &STREAM[10..]], KEEP)
    }

    fn check(run: &Run) {
        check_run(
            STREAM,
            &reference(STREAM),
            &[&STREAM[..10], &STREAM[10..]],
            KEEP,
            run,
            false,
        );
    }

    #[test]
    fn reference_reading() {
        let r = reference(STREAM);
        let data: Vec<&[u8]> = r.iter().map(|e| &e.data[..]).collect();
        assert_eq!(data, [&b"a"[..], b"b", b""]);
        assert_eq!((r[0].start, r[0].end, r[2].terminated), (0, 11, false));
        check(&good());
    }

    #[test]
    #[should_panic(expected = "events instead of")]
    fn extra_event() {
        let mut run = good();
        run.events.push((Vec::new(), b"\n".to_vec()));
        check(&run);
    }

    #[test]
    #[should_panic(expected = "data of event 1")]
    fn wrong_data() {
        let mut run = good();
        run.events[1].0 = b" b".to_vec();
        check(&run);
    }

    #[test]
    #[should_panic(expected = "sent on")]
    fn lost_byte() {
        let mut run = good();
        run.out.pop();
        check(&run);
    }

    #[test]
    #[should_panic(expected = "after 10 bytes")]
    fn held_back() {
        let mut run = good();
        run.progress[0].1 = 0;
        check(&run);
    }

    #[test]
    #[should_panic(expected = "sent on")]
    fn dropped_bytes_stay() {
        let drop_first = |i: usize| if i == 0 { Verdict::Drop } else { Verdict::Keep };
        let chunks = [STREAM];
        check_run(
            STREAM,
            &reference(STREAM),
            &chunks,
            &drop_first,
            &Run::of(&chunks, KEEP),
            true,
        );
    }
}
