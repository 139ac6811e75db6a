//! Server-sent events from a model provider: the `data` of each event, read in one pass over
//! each piece of the body, however the pieces were cut.
//!
//! The format (WHATWG HTML, "server-sent events"): lines end with LF, CRLF or CR; a blank line
//! ends an event; `data` lines add to its data, joined by LF; a line opening with `:` is a
//! comment; any other field is ignored here (`event`, `id`, `retry` mean nothing to a
//! chat-completions stream), and so is a line without a colon. A byte-order mark may open the
//! stream. An event still open when the body ends is handed out too (a lenient reading: the
//! format drops it, but a provider that ends on `data: [DONE]` without its blank line meant it).
//!
//! Written here rather than taken from a crate: eventsource-stream copies what is left of its
//! buffer after every line, so a piece of n events costs O(n²) (a sixth of a turn's
//! instructions through a fast provider, under callgrind, and a provider sending a long run of
//! short lines could hold a core); sse-stream ends the stream at a field it does not know, where
//! the format says to ignore it. Neither bounds an event's size, which this does.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The `data` of each event out of a body's pieces.
pub struct Decoder {
    /// The start of a line the last piece ended in.
    partial: Vec<u8>,
    /// The open event's data, when it is more than one line of one piece.
    data: Vec<u8>,
    /// The open event's data while it is one `data` line inside one piece: a slice of that
    /// piece, not a copy (the usual case).
    slice: Option<Bytes>,
    /// The open event has a `data` line.
    has_data: bool,
    /// The last piece ended with CR: an LF opening the next one belongs to it.
    after_cr: bool,
    /// Nothing was read yet (a byte-order mark may come first).
    at_start: bool,
    max_event_bytes: usize,
}

/// An event (or a line) grew past the decoder's bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

/// Where a line's bytes are: inside the piece being read (its range), or copied out.
enum Line<'a> {
    InPiece(&'a Bytes, usize, usize),
    Copied(&'a [u8]),
}

impl Decoder {
    /// A decoder that refuses an event or a line longer than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            partial: Vec::new(),
            data: Vec::new(),
            slice: None,
            has_data: false,
            after_cr: false,
            at_start: true,
            max_event_bytes,
        }
    }

    /// Reads one piece of the body; the data of each event it ends is pushed onto `out`.
    pub fn feed(&mut self, piece: &Bytes, out: &mut VecDeque<Bytes>) -> Result<(), TooLarge> {
        let bytes = &piece[..];
        let mut at = 0;
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if bytes[0] == b'\n' {
                at = 1;
            }
        }
        if self.at_start && !bytes.is_empty() {
            // A mark cut across two pieces is not recognised: no provider sends one at all.
            self.at_start = false;
            if bytes.starts_with(BOM) {
                at = BOM.len();
            }
        }
        while at < bytes.len() {
            let Some(length) = memchr::memchr2(b'\n', b'\r', &bytes[at..]) else {
                self.partial.extend_from_slice(&bytes[at..]);
                return self.check();
            };
            let end = at + length;
            if self.partial.is_empty() {
                self.line(Line::InPiece(piece, at, end), out)?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&bytes[at..end]);
                self.line(Line::Copied(&line), out)?;
            }
            at = end + 1;
            if bytes[end] == b'\r' {
                if bytes.get(at) == Some(&b'\n') {
                    at += 1;
                } else if at == bytes.len() {
                    self.after_cr = true;
                }
            }
        }
        Ok(())
    }

    /// The body ended: a line and an event still open are read as if they had been closed.
    pub fn finish(&mut self, out: &mut VecDeque<Bytes>) -> Result<(), TooLarge> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(Line::Copied(&line), out)?;
        }
        self.dispatch(out);
        Ok(())
    }

    fn line(&mut self, line: Line<'_>, out: &mut VecDeque<Bytes>) -> Result<(), TooLarge> {
        let bytes = match &line {
            Line::InPiece(piece, from, to) => &piece[*from..*to],
            Line::Copied(bytes) => bytes,
        };
        if bytes.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        // A line without a colon is a field with an empty value; a comment has an empty name.
        let colon = memchr::memchr(b':', bytes).unwrap_or(bytes.len());
        if &bytes[..colon] != b"data" {
            return Ok(());
        }
        let mut from = (colon + 1).min(bytes.len());
        if bytes.get(from) == Some(&b' ') {
            from += 1;
        }
        let value = &bytes[from..];
        if !self.has_data {
            self.has_data = true;
            match line {
                Line::InPiece(piece, start, end) => self.slice = Some(piece.slice(start + from..end)),
                Line::Copied(_) => self.data.extend_from_slice(value),
            }
        } else {
            if let Some(slice) = self.slice.take() {
                self.data.extend_from_slice(&slice);
            }
            self.data.push(b'\n');
            self.data.extend_from_slice(value);
        }
        self.check()
    }

    fn dispatch(&mut self, out: &mut VecDeque<Bytes>) {
        if !std::mem::take(&mut self.has_data) {
            return;
        }
        match self.slice.take() {
            Some(slice) => out.push_back(slice),
            None => out.push_back(Bytes::from(std::mem::take(&mut self.data))),
        }
    }

    fn check(&self) -> Result<(), TooLarge> {
        let open = self.partial.len() + self.data.len() + self.slice.as_ref().map_or(0, Bytes::len);
        if open > self.max_event_bytes {
            Err(TooLarge)
        } else {
            Ok(())
        }
    }
}

/// Why a provider's event stream could not be read.
#[derive(Debug)]
pub enum ReadError<E> {
    /// The body itself failed (the connection broke).
    Body(E),
    /// An event was longer than the bound.
    TooLarge,
}

impl<E: std::fmt::Display> std::fmt::Display for ReadError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Body(error) => error.fmt(f),
            ReadError::TooLarge => f.write_str("an event longer than this server accepts"),
        }
    }
}

/// The `data` of each event of a body, as a stream; it ends after its first error, once the
/// events read before it are handed out.
pub struct DataEvents<S> {
    body: S,
    decoder: Decoder,
    ready: VecDeque<Bytes>,
    end: End,
}

/// What comes once `ready` is empty.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// More of the body.
    NotYet,
    /// An event past the bound, then the end.
    TooLarge,
    /// The end.
    Ended,
}

impl<S> DataEvents<S> {
    pub fn new(body: S, max_event_bytes: usize) -> Self {
        Self {
            body,
            decoder: Decoder::new(max_event_bytes),
            ready: VecDeque::new(),
            end: End::NotYet,
        }
    }
}

impl<S, E> Stream for DataEvents<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, ReadError<E>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(data) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(data)));
            }
            match this.end {
                End::NotYet => {}
                End::TooLarge => {
                    this.end = End::Ended;
                    return Poll::Ready(Some(Err(ReadError::TooLarge)));
                }
                End::Ended => return Poll::Ready(None),
            }
            let read = match ready!(this.body.poll_next_unpin(cx)) {
                Some(Ok(piece)) => this.decoder.feed(&piece, &mut this.ready),
                Some(Err(error)) => {
                    this.end = End::Ended;
                    return Poll::Ready(Some(Err(ReadError::Body(error))));
                }
                None => {
                    this.end = End::Ended;
                    this.decoder.finish(&mut this.ready)
                }
            };
            if read.is_err() {
                this.end = End::TooLarge;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(pieces: &[&[u8]], max: usize) -> Result<Vec<String>, TooLarge> {
        let mut decoder = Decoder::new(max);
        let mut out = VecDeque::new();
        for piece in pieces {
            decoder.feed(&Bytes::copy_from_slice(piece), &mut out)?;
        }
        decoder.finish(&mut out)?;
        Ok(out.iter().map(|d| String::from_utf8(d.to_vec()).unwrap()).collect())
    }

    /// Every line ending, comments, ignored fields, a field without a colon, `data` without its
    /// space, several `data` lines, an empty event, and an event the body ends in.
    const STREAM: &[u8] = b"\xEF\xBB\xBF: a comment\r\n\
        event: chunk\ndata: {\"a\":1}\n\n\
        id: 7\r\ndata:first\r\ndata:  second\r\n\r\n\
        retry: 10\rdata: {\"b\":2}\r\r\
        data\n\n\
        \n\n\
        nonsense\ndata: [DONE]";

    fn expected() -> Vec<String> {
        vec![
            r#"{"a":1}"#.into(),
            "first\n second".into(),
            r#"{"b":2}"#.into(),
            String::new(),
            "[DONE]".into(),
        ]
    }

    #[test]
    fn a_stream_reads_the_same_however_it_is_cut() {
        assert_eq!(decode(&[STREAM], 1024).unwrap(), expected());
        for cut in 0..=STREAM.len() {
            let (a, b) = STREAM.split_at(cut);
            assert_eq!(decode(&[a, b], 1024).unwrap(), expected(), "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(decode(&bytes, 1024).unwrap(), expected());
    }

    #[test]
    fn an_event_inside_one_piece_is_a_slice_of_it_not_a_copy() {
        let piece = Bytes::from_static(b"data: one\n\ndata: two\n\n");
        let mut decoder = Decoder::new(1024);
        let mut out = VecDeque::new();
        decoder.feed(&piece, &mut out).unwrap();
        let range = piece.as_ptr_range();
        assert_eq!(out.len(), 2);
        for data in &out {
            assert!(range.contains(&data.as_ptr()), "copied: {data:?}");
        }
    }

    #[test]
    fn many_events_in_one_piece_are_all_read() {
        let piece: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("data: {i}\n\n").into_bytes())
            .collect();
        let events = decode(&[&piece], 64).unwrap();
        assert_eq!(events.len(), 20_000);
        assert_eq!(events[19_999], "19999");
    }

    #[test]
    fn an_event_or_a_line_past_the_bound_is_refused() {
        // Several data lines that together pass it.
        let lines = "data: 0123456789\n".repeat(10);
        assert_eq!(decode(&[lines.as_bytes()], 100), Err(TooLarge));
        assert_eq!(decode(&[lines.as_bytes()], 200).unwrap().len(), 1);
        // One line that never ends, in many pieces.
        let piece = [b'x'; 64];
        let pieces: Vec<&[u8]> = std::iter::repeat_n(&piece[..], 10).collect();
        assert_eq!(decode(&pieces, 500), Err(TooLarge));
        // Comments and blank lines cost nothing however many there are.
        let noise = ": keep-alive\n\n".repeat(1000);
        assert_eq!(decode(&[noise.as_bytes()], 20).unwrap(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn the_stream_hands_out_events_then_ends_at_its_first_error() {
        let pieces = futures_util::stream::iter([
            Ok::<_, std::io::Error>(Bytes::from_static(b"data: a\n\ndata: b\n")),
            Ok(Bytes::from_static(b"\ndata: c")),
        ]);
        let events: Vec<_> = DataEvents::new(pieces, 100).collect().await;
        let events: Vec<Bytes> = events.into_iter().map(Result::unwrap).collect();
        assert_eq!(events, [&b"a"[..], b"b", b"c"].map(Bytes::from_static));

        let pieces = futures_util::stream::iter([
            Ok::<_, std::io::Error>(Bytes::from_static(b"data: a\n\n")),
            Err(std::io::Error::other("broken")),
            Ok(Bytes::from_static(b"data: late\n\n")),
        ]);
        let events: Vec<_> = DataEvents::new(pieces, 100).collect().await;
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[1], Err(ReadError::Body(e)) if e.to_string() == "broken"));

        // The events before the one past the bound, in the same piece, still come first.
        let mut piece = b"data: a\n\ndata: ".to_vec();
        piece.extend_from_slice(&[b'x'; 200]);
        let pieces = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(piece))]);
        let events: Vec<_> = DataEvents::new(pieces, 100).collect().await;
        assert!(
            matches!(events.as_slice(), [Ok(a), Err(ReadError::TooLarge)] if a == "a"),
            "{events:?}"
        );
    }
}
