//! HTTP/1.1 request framing as the bytes arrive, checked without I/O (RFC 9112 §§2.2, 6, 7.1).
//!
//! hyper decodes request bodies itself, and accepts some chunked framing that nginx and HAProxy
//! refuse: whitespace after a chunk size, any number of leading zeros, chunk extensions of any
//! bytes but LF, a bare LF where the last chunk or a trailer line should end in CRLF. A [`Scanner`]
//! reads the same bytes in front of hyper (`conn` feeds it from the downstream socket), finds where
//! each request head ends and how its body is framed, and refuses a chunked body that is not
//! exactly RFC 9112 §7.1:
//!
//! ```text
//! chunk      = 1*16HEXDIG *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] ) CRLF
//!              chunk-data CRLF
//! last-chunk = 1*16"0" [ chunk-ext ] CRLF *( field-line CRLF ) CRLF
//! ```
//!
//! It reports the declared size of every chunk before its data is read, so a route's body limit can
//! refuse a chunk that would cross it. It never refuses a head: a head it cannot read (hyper will
//! answer it 400 or 431), a `CONNECT` or an upgrade makes it step aside for the rest of the
//! connection. The first bytes of a connection may also be the HTTP/2 preface, reported as such.

/// Hex digits a chunk size may have at most (a u64; leading zeros count).
pub const MAX_CHUNK_SIZE_DIGITS: u8 = 16;
/// Decimal digits a `Content-Length` may have at most (leading zeros count).
pub const MAX_LENGTH_DIGITS: usize = 19;
/// Bytes of a chunk line (size and extensions) at most.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Bytes of a trailer section at most (hyper's own limit).
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Trailer lines at most (hyper's default header count).
pub const MAX_TRAILER_LINES: usize = 100;
/// Header lines the scanner reads in a head; beyond, it steps aside (hyper applies its own limit).
const MAX_HEAD_FIELDS: usize = 128;
/// Head bytes whose copy the scanner keeps between requests; a larger one is freed.
const SMALL_HEAD: usize = 2048;
pub use crate::data::http1::H2_PREFACE;

/// What is wrong with a chunked request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// Not a chunk size: a sign, a `0x` prefix, an underscore, whitespace before or after it.
    #[error("chunk size is not hexadecimal digits")]
    ChunkSize,
    /// More hex digits than a size needs.
    #[error("chunk size has more than 16 hex digits")]
    ChunkSizeTooLong,
    /// A chunk extension that is not `;name` or `;name=value`.
    #[error("malformed chunk extension")]
    ChunkExtension,
    /// A chunk line longer than [`MAX_CHUNK_LINE`].
    #[error("chunk line too long")]
    ChunkLineTooLong,
    /// A line of the chunked body ended in a bare LF, or a CR not followed by LF.
    #[error("chunked body line does not end in CRLF")]
    LineEnding,
    /// Chunk data not followed by CRLF (more or less data than the size said).
    #[error("chunk data not followed by CRLF")]
    ChunkData,
    /// A trailer line that is not `name: value`.
    #[error("malformed trailer field")]
    Trailer,
    /// A trailer section over [`MAX_TRAILER_BYTES`] or [`MAX_TRAILER_LINES`].
    #[error("trailer section too large")]
    TrailerTooLarge,
}

impl FramingError {
    /// Every error, in a fixed order (for a compact code).
    pub const ALL: [FramingError; 8] = [
        FramingError::ChunkSize,
        FramingError::ChunkSizeTooLong,
        FramingError::ChunkExtension,
        FramingError::ChunkLineTooLong,
        FramingError::LineEnding,
        FramingError::ChunkData,
        FramingError::Trailer,
        FramingError::TrailerTooLarge,
    ];
}

/// Where the bytes became invalid: the first `at` bytes of the slice fed were valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Valid bytes before the offending one, in the slice just fed.
    pub at: usize,
    /// What is wrong.
    pub error: FramingError,
}

/// What the scanner saw, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The first byte of a message (an empty line before a request line included).
    Started,
    /// A complete request head; its body follows.
    Head,
    /// A chunk of this many bytes was announced; its data has not been read yet.
    Chunk(u64),
    /// The request's body (or the request, without one) ended.
    Ended,
    /// The connection began with the complete HTTP/2 preface.
    Preface,
    /// The scanner stepped aside: nothing more is checked on this connection.
    Opaque,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Head,
    Preface(u8),
    Length(u64),
    SizeStart,
    Size,
    SizeBws,
    ExtBeforeName,
    ExtName,
    ExtNameBws,
    ExtBeforeValue,
    ExtValue,
    ExtValueBws,
    ExtQuoted,
    ExtQuotedPair,
    ExtQuotedEnd,
    ChunkLf,
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Opaque,
}

/// How a request's body is framed, from its head.
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// `CONNECT` or an upgrade: what follows the head is not HTTP/1.1 the scanner can follow.
    Tunnel,
}

/// The framing state of one connection's request stream.
pub struct Scanner {
    state: State,
    head: Vec<u8>,
    max_head: usize,
    line_has_content: bool,
    first: bool,
    started: bool,
    chunk: u64,
    digits: u8,
    line: usize,
    trailer_bytes: usize,
    trailer_lines: usize,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// SP or HTAB.
fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// VCHAR, obs-text and whitespace: what a quoted string, a quoted pair and a field value may hold
/// (the quote and the backslash are matched before this is asked).
fn is_text(b: u8) -> bool {
    is_ws(b) || (b >= 0x21 && b != 0x7f)
}

/// Where a chunk line may end; a bare LF is never a line end in a chunked body.
fn line_end(b: u8, otherwise: FramingError) -> Result<State, FramingError> {
    match b {
        b'\r' => Ok(State::ChunkLf),
        b'\n' => Err(FramingError::LineEnding),
        _ => Err(otherwise),
    }
}

impl Scanner {
    /// A scanner for a new connection; heads longer than `max_head` bytes make it step aside.
    pub fn new(max_head: usize) -> Self {
        Scanner {
            state: State::Idle,
            head: Vec::new(),
            max_head,
            line_has_content: false,
            first: true,
            started: false,
            chunk: 0,
            digits: 0,
            line: 0,
            trailer_bytes: 0,
            trailer_lines: 0,
        }
    }

    /// Frees the copy of the last head; called between requests only (an idle connection).
    pub fn release(&mut self) {
        self.head = Vec::new();
    }

    /// True once the scanner stepped aside.
    pub fn is_opaque(&self) -> bool {
        self.state == State::Opaque
    }

    /// Reads the next bytes of the stream, reporting what it finds to `on`. After an error the
    /// scanner stays where it was: the connection is to be given up.
    pub fn feed(&mut self, bytes: &[u8], mut on: impl FnMut(Event)) -> Result<(), Refused> {
        let mut i = 0;
        while i < bytes.len() {
            let refuse = |error| Refused { at: i, error };
            match self.state {
                State::Opaque => return Ok(()),
                State::Idle => {
                    if !self.started {
                        self.started = true;
                        on(Event::Started);
                    }
                    // RFC 9112 §2.2: empty lines before a request line are ignored, as hyper does.
                    if matches!(bytes[i], b'\r' | b'\n') {
                        i += 1;
                    } else {
                        self.head.clear();
                        self.line_has_content = false;
                        self.state = State::Head;
                    }
                }
                State::Head => i = self.head_bytes(bytes, i, &mut on),
                State::Preface(k) => {
                    if bytes[i] != H2_PREFACE[18 + usize::from(k)] {
                        self.opaque(&mut on);
                        return Ok(());
                    }
                    i += 1;
                    if usize::from(k) + 19 == H2_PREFACE.len() {
                        on(Event::Preface);
                        self.opaque(&mut on);
                        return Ok(());
                    }
                    self.state = State::Preface(k + 1);
                }
                State::Length(n) => {
                    let take = n.min((bytes.len() - i) as u64);
                    i += take as usize;
                    if n == take {
                        self.end(&mut on);
                    } else {
                        self.state = State::Length(n - take);
                    }
                }
                State::Data(n) => {
                    let take = n.min((bytes.len() - i) as u64);
                    i += take as usize;
                    self.state = if n == take {
                        State::DataCr
                    } else {
                        State::Data(n - take)
                    };
                }
                _ => {
                    self.chunked_byte(bytes[i], &mut on).map_err(refuse)?;
                    i += 1;
                }
            }
        }
        Ok(())
    }

    /// Copies head bytes up to the blank line that ends the head; returns the next index.
    fn head_bytes(&mut self, bytes: &[u8], mut i: usize, on: &mut impl FnMut(Event)) -> usize {
        let start = i;
        let mut complete = false;
        // Line by line (memchr finds each LF): a line has content when any byte but CR is in it.
        while i < bytes.len() {
            let rest = &bytes[i..];
            let (k, lf) = memchr::memchr(b'\n', rest).map_or((rest.len(), false), |k| (k, true));
            self.line_has_content |= rest[..k].iter().any(|b| *b != b'\r');
            i += k + usize::from(lf);
            if lf && !std::mem::replace(&mut self.line_has_content, false) {
                complete = true;
                break;
            }
        }
        self.head.extend_from_slice(&bytes[start..i]);
        if self.head.len() > self.max_head {
            self.opaque(on);
        } else if complete {
            self.head_complete(on);
        }
        i
    }

    fn head_complete(&mut self, on: &mut impl FnMut(Event)) {
        let first = std::mem::replace(&mut self.first, false);
        if first && self.head == H2_PREFACE[..18] {
            self.state = State::Preface(0);
            return;
        }
        let framing = self.framing();
        // An idle connection keeps no large buffer: a big head's copy is freed once read.
        if self.head.capacity() > SMALL_HEAD {
            self.head = Vec::new();
        }
        match framing {
            None => self.opaque(on),
            Some(Framing::Tunnel) => {
                on(Event::Head);
                self.opaque(on);
            }
            Some(Framing::None) => {
                on(Event::Head);
                self.end(on);
            }
            Some(Framing::Length(n)) => {
                on(Event::Head);
                self.state = State::Length(n);
            }
            Some(Framing::Chunked) => {
                on(Event::Head);
                self.state = State::SizeStart;
            }
        }
    }

    /// The body framing of the head just read, as hyper will see it; `None` when hyper will
    /// refuse the head (or the scanner cannot read it).
    fn framing(&self) -> Option<Framing> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEAD_FIELDS];
        let mut request = httparse::Request::new(&mut fields);
        match request.parse(&self.head) {
            Ok(httparse::Status::Complete(n)) if n == self.head.len() => {}
            _ => return None,
        }
        let version = request.version?;
        if request.method?.eq_ignore_ascii_case("CONNECT") {
            return Some(Framing::Tunnel);
        }
        let field = |name: &'static str| {
            request
                .headers
                .iter()
                .filter(move |h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        if version == 1
            && crate::data::headers::upgrade_offered(field("connection"), field("upgrade"))
        {
            return Some(Framing::Tunnel);
        }
        if field("transfer-encoding").next().is_some() {
            let last = field("transfer-encoding")
                .flat_map(|v| v.split(|b| *b == b','))
                .map(trim)
                .rfind(|t| !t.is_empty())?;
            return (version == 1 && last.eq_ignore_ascii_case(b"chunked"))
                .then_some(Framing::Chunked);
        }
        let mut length = None;
        for value in field("content-length") {
            let value = trim(value);
            if value.len() > MAX_LENGTH_DIGITS {
                return None;
            }
            let n = crate::data::headers::decimal(value)?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
        Some(match length {
            None | Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
        })
    }

    fn end(&mut self, on: &mut impl FnMut(Event)) {
        on(Event::Ended);
        self.state = State::Idle;
        self.started = false;
    }

    fn opaque(&mut self, on: &mut impl FnMut(Event)) {
        self.state = State::Opaque;
        self.head = Vec::new();
        on(Event::Opaque);
    }

    /// One byte of a chunk line, of the CRLF after chunk data, or of the trailer section.
    fn chunked_byte(&mut self, b: u8, on: &mut impl FnMut(Event)) -> Result<(), FramingError> {
        use FramingError as E;
        use State as S;
        if self.state == S::SizeStart {
            self.chunk = 0;
            self.digits = 0;
            self.line = 0;
        }
        if self.in_chunk_line() {
            self.line += 1;
            if self.line > MAX_CHUNK_LINE {
                return Err(E::ChunkLineTooLong);
            }
        } else if self.in_trailers() {
            self.trailer_bytes += 1;
            if self.trailer_bytes > MAX_TRAILER_BYTES {
                return Err(E::TrailerTooLarge);
            }
        }
        self.state = match self.state {
            S::ChunkLf => match b {
                b'\n' if self.chunk == 0 => {
                    self.trailer_bytes = 0;
                    self.trailer_lines = 0;
                    S::TrailerStart
                }
                b'\n' => {
                    on(Event::Chunk(self.chunk));
                    S::Data(self.chunk)
                }
                _ => return Err(E::LineEnding),
            },
            S::DataCr if b == b'\r' => S::DataLf,
            S::DataLf if b == b'\n' => S::SizeStart,
            S::DataCr | S::DataLf => return Err(E::ChunkData),
            S::TrailerStart | S::TrailerName | S::TrailerValue | S::TrailerLf | S::EndLf => {
                match self.trailer_byte(b)? {
                    Some(next) => next,
                    None => {
                        self.end(on);
                        return Ok(());
                    }
                }
            }
            S::Idle | S::Head | S::Preface(_) | S::Length(_) | S::Data(_) | S::Opaque => self.state,
            // The chunk line: its size and extensions.
            _ => self.chunk_line_byte(b)?,
        };
        Ok(())
    }

    /// One byte of a chunk line before its CR: the size, then any extensions.
    fn chunk_line_byte(&mut self, b: u8) -> Result<State, FramingError> {
        use FramingError as E;
        use State as S;
        let (ws, text) = (is_ws(b), is_text(b));
        Ok(match self.state {
            S::SizeStart | S::Size => match hex(b) {
                Some(digit) => {
                    self.digits += 1;
                    if self.digits > MAX_CHUNK_SIZE_DIGITS {
                        return Err(E::ChunkSizeTooLong);
                    }
                    // At most 16 digits: never overflows.
                    self.chunk = (self.chunk << 4) | digit;
                    S::Size
                }
                None if self.state == S::SizeStart => return Err(E::ChunkSize),
                None if b == b';' => S::ExtBeforeName,
                None if ws => S::SizeBws,
                None => line_end(b, E::ChunkSize)?,
            },
            S::SizeBws => match b {
                b';' => S::ExtBeforeName,
                _ if ws => S::SizeBws,
                _ => return Err(E::ChunkSize),
            },
            S::ExtBeforeName => match b {
                _ if ws => S::ExtBeforeName,
                _ if is_tchar(b) => S::ExtName,
                _ => return Err(E::ChunkExtension),
            },
            S::ExtName => match b {
                _ if is_tchar(b) => S::ExtName,
                b'=' => S::ExtBeforeValue,
                b';' => S::ExtBeforeName,
                _ if ws => S::ExtNameBws,
                _ => line_end(b, E::ChunkExtension)?,
            },
            S::ExtNameBws => match b {
                b'=' => S::ExtBeforeValue,
                b';' => S::ExtBeforeName,
                _ if ws => S::ExtNameBws,
                _ => return Err(E::ChunkExtension),
            },
            S::ExtBeforeValue => match b {
                b'"' => S::ExtQuoted,
                _ if ws => S::ExtBeforeValue,
                _ if is_tchar(b) => S::ExtValue,
                _ => return Err(E::ChunkExtension),
            },
            S::ExtValue | S::ExtQuotedEnd => match b {
                _ if is_tchar(b) && self.state == S::ExtValue => S::ExtValue,
                b';' => S::ExtBeforeName,
                _ if ws => S::ExtValueBws,
                _ => line_end(b, E::ChunkExtension)?,
            },
            S::ExtValueBws => match b {
                b';' => S::ExtBeforeName,
                _ if ws => S::ExtValueBws,
                _ => return Err(E::ChunkExtension),
            },
            S::ExtQuoted => match b {
                b'"' => S::ExtQuotedEnd,
                b'\\' => S::ExtQuotedPair,
                _ if text => S::ExtQuoted,
                _ => return Err(E::ChunkExtension),
            },
            S::ExtQuotedPair if text => S::ExtQuoted,
            S::ExtQuotedPair => return Err(E::ChunkExtension),
            state => state,
        })
    }

    /// One byte of the trailer section; `None` when it ends the body.
    fn trailer_byte(&mut self, b: u8) -> Result<Option<State>, FramingError> {
        use FramingError as E;
        use State as S;
        let text = is_text(b);
        Ok(Some(match self.state {
            S::TrailerStart => match b {
                b'\r' => S::EndLf,
                b'\n' => return Err(E::LineEnding),
                _ if is_tchar(b) => {
                    self.trailer_lines += 1;
                    if self.trailer_lines > MAX_TRAILER_LINES {
                        return Err(E::TrailerTooLarge);
                    }
                    S::TrailerName
                }
                // Whitespace here would be obs-fold; anything else is not a field name.
                _ => return Err(E::Trailer),
            },
            S::TrailerName => match b {
                b':' => S::TrailerValue,
                _ if is_tchar(b) => S::TrailerName,
                _ => return Err(E::Trailer),
            },
            S::TrailerValue => match b {
                b'\r' => S::TrailerLf,
                b'\n' => return Err(E::LineEnding),
                _ if text => S::TrailerValue,
                _ => return Err(E::Trailer),
            },
            S::TrailerLf if b == b'\n' => S::TrailerStart,
            S::EndLf if b == b'\n' => return Ok(None),
            S::TrailerLf | S::EndLf => return Err(E::LineEnding),
            state => state,
        }))
    }

    fn in_chunk_line(&self) -> bool {
        use State as S;
        matches!(
            self.state,
            S::SizeStart
                | S::Size
                | S::SizeBws
                | S::ExtBeforeName
                | S::ExtName
                | S::ExtNameBws
                | S::ExtBeforeValue
                | S::ExtValue
                | S::ExtValueBws
                | S::ExtQuoted
                | S::ExtQuotedPair
                | S::ExtQuotedEnd
                | S::ChunkLf
        )
    }

    fn in_trailers(&self) -> bool {
        use State as S;
        matches!(
            self.state,
            S::TrailerStart | S::TrailerName | S::TrailerValue | S::TrailerLf | S::EndLf
        )
    }
}

#[cfg(test)]
mod tests;
