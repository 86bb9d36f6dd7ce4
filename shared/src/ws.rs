//! WebSocket messages: UTF-8 JSON text frames, one object each, tagged by `type`.

use crate::SessionId;
use crate::api::UserView;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;

/// What a client may send.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Answered by a `pong` carrying `t` back as the very same JSON number.
    Ping { t: Box<RawValue> },
}

/// What the server sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome {
        session_id: SessionId,
        user: UserView,
        #[serde(with = "time::serde::rfc3339")]
        server_time: OffsetDateTime,
    },
    Pong {
        t: serde_json::Number,
    },
    Error {
        code: String,
        message: String,
    },
}

/// The `code` of an `error` message for a frame the server cannot use.
pub const BAD_MESSAGE: &str = "bad_message";

/// Why a client frame was refused; the text goes to the client as the `message`.
#[derive(Debug, PartialEq, Eq)]
pub struct BadMessage(pub &'static str);

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PingFields {
    #[serde(rename = "type")]
    _kind: serde::de::IgnoredAny,
    t: Box<RawValue>,
}

impl ClientMessage {
    /// Decodes one text frame. Done in two steps, because a `RawValue` cannot pass
    /// through serde's buffering of internally tagged enums, and `pong` must echo
    /// the client's number exactly as it was written.
    pub fn decode(text: &str) -> Result<ClientMessage, BadMessage> {
        let envelope: Envelope<'_> =
            serde_json::from_str(text).map_err(|_| BadMessage("not a JSON object with a string `type`"))?;
        match envelope.kind.as_ref() {
            "ping" => {
                let fields: PingFields = serde_json::from_str(text)
                    .map_err(|_| BadMessage("ping takes exactly one field, `t`, a number"))?;
                if !is_json_number(fields.t.get()) {
                    return Err(BadMessage("ping takes exactly one field, `t`, a number"));
                }
                Ok(ClientMessage::Ping { t: fields.t })
            }
            _ => Err(BadMessage("unknown message type")),
        }
    }
}

fn is_json_number(raw: &str) -> bool {
    raw.starts_with(|c: char| c == '-' || c.is_ascii_digit())
}

/// A `pong` echoing `t` byte for byte, built without re-encoding the number.
pub fn pong_frame(t: &RawValue) -> String {
    format!(r#"{{"type":"pong","t":{}}}"#, t.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_keeps_the_number_as_written() {
        for t in ["1", "-0.5", "1e3", "12345678901234567890123", "1.50"] {
            let text = format!(r#"{{"type":"ping","t":{t}}}"#);
            let ClientMessage::Ping { t: raw } = ClientMessage::decode(&text).unwrap();
            assert_eq!(pong_frame(&raw), format!(r#"{{"type":"pong","t":{t}}}"#));
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        for text in [
            "",
            "not json",
            "[]",
            r#"{"t":1}"#,
            r#"{"type":"dance"}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"ping","t":"1"}"#,
            r#"{"type":"ping","t":null}"#,
            r#"{"type":"ping","t":1,"x":2}"#,
            r#"{"type":7,"t":1}"#,
        ] {
            assert!(ClientMessage::decode(text).is_err(), "{text:?} was accepted");
        }
    }
}
