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
    /// Enter a room (leaving the current one); `lobby` when `room` is absent. With
    /// `encoding: binary` the room's snapshots come as binary frames ([`crate::snapshot`]).
    Join {
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        encoding: Option<Encoding>,
    },
    /// Leave the current room.
    Leave {},
    /// One tick of movement: `dx`, `dy` in [-1, 1]; `seq` increases with each input.
    /// `ack`: the newest binary snapshot tick applied (binary encoding only).
    Input {
        seq: u32,
        dx: f32,
        dy: f32,
        #[serde(skip_serializing_if = "Option::is_none")]
        ack: Option<u32>,
    },
    /// The newest binary snapshot tick applied, for a tick with no input to carry it;
    /// 0: the client holds no view (the next frame is a full one).
    Ack { tick: u32 },
    /// A chat line to the current room.
    Chat { text: String },
}

/// The game's client messages, which need no raw number: decoded in one step.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum GameMessage {
    Join {
        #[serde(default)]
        room: Option<String>,
        #[serde(default)]
        encoding: Option<Encoding>,
    },
    Leave {},
    Ack {
        tick: u32,
    },
    Chat {
        text: String,
    },
}

/// How a socket gets its room's snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// `snapshot` messages: the whole room, every tick.
    #[default]
    Json,
    /// Binary delta frames of what is near the player ([`crate::snapshot`]).
    Binary,
}

/// A player as others see them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlayerInfo {
    /// Per connection: two tabs of one user are two players.
    pub id: u32,
    pub name: String,
}

/// A player's state in a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlayerState {
    pub id: u32,
    pub x: f32,
    pub y: f32,
    pub score: u32,
    /// The `seq` of the last input of this player the server applied (0: none yet).
    pub ack: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemState {
    pub id: u32,
    pub x: f32,
    pub y: f32,
}

/// The rules a client needs to predict its own movement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorldRules {
    pub width: f32,
    pub height: f32,
    /// Units per second at full input.
    pub speed: f32,
    pub tick_rate: u32,
    pub pickup_radius: f32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceEvent {
    Join,
    Leave,
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
    /// The answer to `join`: who is here and the rules of the world.
    Joined {
        room: String,
        you: u32,
        capacity: u32,
        world: WorldRules,
        players: Vec<PlayerInfo>,
    },
    /// The answer to `leave`.
    Left {
        room: String,
    },
    /// Someone else entered or left the room.
    Presence {
        room: String,
        event: PresenceEvent,
        player: PlayerInfo,
    },
    /// The room's state after a tick; every member gets the same frame.
    Snapshot {
        room: String,
        tick: u64,
        players: Vec<PlayerState>,
        items: Vec<ItemState>,
    },
    Chat {
        room: String,
        from: PlayerInfo,
        text: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    Error {
        code: String,
        message: String,
    },
}

/// The `code` of an `error` message for a frame the server cannot use.
pub const BAD_MESSAGE: &str = "bad_message";
/// `error` codes of the game.
pub const ROOM_FULL: &str = "room_full";
pub const NOT_IN_ROOM: &str = "not_in_room";
pub const RATE_LIMITED: &str = "rate_limited";
pub const ROOM_UNAVAILABLE: &str = "room_unavailable";

/// Why a client frame was refused; the text goes to the client as the `message`.
#[derive(Debug, PartialEq, Eq)]
pub struct BadMessage(pub &'static str);

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

/// `input` read in one pass: an internally tagged enum buffers every field first,
/// and inputs are most of what the server reads.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputFields {
    #[serde(rename = "type")]
    _kind: serde::de::IgnoredAny,
    seq: u32,
    dx: f32,
    dy: f32,
    #[serde(default)]
    ack: Option<u32>,
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
            "input" => serde_json::from_str::<InputFields>(text)
                .map(|InputFields { seq, dx, dy, ack, .. }| ClientMessage::Input { seq, dx, dy, ack })
                .map_err(|_| {
                    BadMessage(
                        "input takes `seq` (a whole number), `dx`, `dy` (numbers) and an optional `ack`",
                    )
                }),
            "join" | "leave" | "ack" | "chat" => match serde_json::from_str::<GameMessage>(text) {
                Ok(GameMessage::Join { room, encoding }) => Ok(ClientMessage::Join { room, encoding }),
                Ok(GameMessage::Leave {}) => Ok(ClientMessage::Leave {}),
                Ok(GameMessage::Ack { tick }) => Ok(ClientMessage::Ack { tick }),
                Ok(GameMessage::Chat { text }) => Ok(ClientMessage::Chat { text }),
                Err(_) => Err(BadMessage(match envelope.kind.as_ref() {
                    "join" => "join takes an optional `room`, a string, and `encoding`, json or binary",
                    "leave" => "leave takes no fields",
                    "input" => {
                        "input takes `seq` (a whole number), `dx`, `dy` (numbers) and an optional `ack`"
                    }
                    "ack" => "ack takes `tick`, a whole number",
                    _ => "chat takes `text`, a string",
                })),
            },
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
            let Ok(ClientMessage::Ping { t: raw }) = ClientMessage::decode(&text) else { panic!("{text}") };
            assert_eq!(pong_frame(&raw), format!(r#"{{"type":"pong","t":{t}}}"#));
        }
    }

    #[test]
    fn game_messages_decode() {
        assert!(matches!(
            ClientMessage::decode(r#"{"type":"join"}"#),
            Ok(ClientMessage::Join { room: None, encoding: None })
        ));
        assert!(matches!(
            ClientMessage::decode(r#"{"type":"join","room":"arena"}"#),
            Ok(ClientMessage::Join { room: Some(r), .. }) if r == "arena"
        ));
        assert!(matches!(
            ClientMessage::decode(r#"{"type":"join","room":"arena","encoding":"binary"}"#),
            Ok(ClientMessage::Join { encoding: Some(Encoding::Binary), .. })
        ));
        assert!(matches!(
            ClientMessage::decode(r#"{"type":"input","seq":3,"dx":0,"dy":1,"ack":40}"#),
            Ok(ClientMessage::Input { ack: Some(40), .. })
        ));
        assert!(matches!(
            ClientMessage::decode(r#"{"type":"ack","tick":7}"#),
            Ok(ClientMessage::Ack { tick: 7 })
        ));
        assert!(matches!(ClientMessage::decode(r#"{"type":"leave"}"#), Ok(ClientMessage::Leave {})));
        assert!(matches!(
            ClientMessage::decode(r#"{"type":"input","seq":3,"dx":-1,"dy":0.5}"#),
            Ok(ClientMessage::Input { seq: 3, dx: -1.0, dy: 0.5, ack: None })
        ));
        assert!(matches!(
            ClientMessage::decode(r#"{"type":"chat","text":"hi"}"#),
            Ok(ClientMessage::Chat { .. })
        ));
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
            r#"{"type":"join","room":5}"#,
            r#"{"type":"leave","x":1}"#,
            r#"{"type":"input","seq":-1,"dx":0,"dy":0}"#,
            r#"{"type":"input","seq":1,"dx":"left","dy":0}"#,
            r#"{"type":"chat"}"#,
            r#"{"type":"join","encoding":"protobuf"}"#,
            r#"{"type":"ack"}"#,
            r#"{"type":"ack","tick":-1}"#,
        ] {
            assert!(ClientMessage::decode(text).is_err(), "{text:?} was accepted");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn decoding_never_panics(text in ".{0,200}") {
                let _ = ClientMessage::decode(&text);
            }

            #[test]
            fn decoding_arbitrary_json_never_panics(
                kind in prop_oneof![
                    Just("ping".to_owned()),
                    Just("join".to_owned()),
                    Just("leave".to_owned()),
                    Just("input".to_owned()),
                    Just("chat".to_owned()),
                    "[a-z]{0,8}",
                ],
                field in "[a-z]{1,6}",
                value in prop_oneof![Just("1".to_owned()), Just("null".to_owned()), Just("\"x\"".to_owned()), Just("[]".to_owned()), Just("{}".to_owned()), "-?[0-9]{1,30}(\\.[0-9]{1,10})?(e[0-9]{1,3})?"],
            ) {
                let _ = ClientMessage::decode(&format!(r#"{{"type":"{kind}","{field}":{value}}}"#));
            }

            #[test]
            fn pong_echoes_any_json_number_byte_for_byte(number in "-?(0|[1-9][0-9]{0,40})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?") {
                let text = format!(r#"{{"type":"ping","t":{number}}}"#);
                let Ok(ClientMessage::Ping { t }) = ClientMessage::decode(&text) else {
                    return Err(TestCaseError::fail(format!("refused {text}")));
                };
                prop_assert_eq!(pong_frame(&t), format!(r#"{{"type":"pong","t":{number}}}"#));
            }

            #[test]
            fn inputs_decode_to_what_was_sent(seq in any::<u32>(), dx in -1.0f32..=1.0, dy in -1.0f32..=1.0) {
                let text = serde_json::json!({"type": "input", "seq": seq, "dx": dx, "dy": dy}).to_string();
                let Ok(ClientMessage::Input { seq: s, dx: x, dy: y, .. }) = ClientMessage::decode(&text) else {
                    return Err(TestCaseError::fail(format!("refused {text}")));
                };
                prop_assert_eq!((s, x, y), (seq, dx, dy));
            }
        }
    }
}
