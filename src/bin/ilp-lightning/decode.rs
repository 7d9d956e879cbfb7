//! `ilp-lightning decode`: an ILP or BTP packet, given in hex, as one JSON object.
//!
//! The first byte tells the layers apart: 12, 13 and 14 are ILP Prepare, Fulfill and Reject;
//! 1, 2, 6 and 7 are BTP Response, Error, Message and Transfer. The `ilp` entries of a BTP
//! packet are decoded as ILP packets (a failure there is reported in an `ilpError` field, since
//! the BTP packet itself is valid), and a Fulfill's data as an IL-DCP response where it parses.

use ilp_plugin_lightning::btp::{self, ProtocolData};
use ilp_plugin_lightning::ilp::{self, ildcp, ErrorCode, MaxPacketAmountDetails};

use crate::json::Object;

/// Why the input could not be decoded; the message is one line.
#[derive(Debug)]
pub struct DecodeError(pub String);

/// Decodes hex text (whitespace anywhere is ignored) into the JSON text of the packet.
pub fn decode_hex(text: &str) -> Result<String, DecodeError> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return Err(DecodeError("no input: expected a packet in hex".into()));
    }
    let bytes = hex::decode(&compact).map_err(|e| DecodeError(format!("invalid hex: {e}")))?;
    decode_bytes(&bytes).map(Object::finish)
}

fn decode_bytes(bytes: &[u8]) -> Result<Object, DecodeError> {
    let Some(&packet_type) = bytes.first() else {
        return Err(DecodeError("no input: expected a packet in hex".into()));
    };
    match packet_type {
        12..=14 => ilp::Packet::parse(bytes)
            .map(ilp_json)
            .map_err(|e| DecodeError(e.to_string())),
        1 | 2 | 6 | 7 => btp::Packet::parse(bytes)
            .map(btp_json)
            .map_err(|e| DecodeError(e.to_string())),
        other => Err(DecodeError(format!(
            "unknown packet type {other} at offset 0: neither ILP (12 Prepare, 13 Fulfill, \
             14 Reject) nor BTP (1 Response, 2 Error, 6 Message, 7 Transfer)"
        ))),
    }
}

fn ilp_json(packet: ilp::Packet<'_>) -> Object {
    let mut json = Object::new();
    json.string("layer", "ilp");
    match packet {
        ilp::Packet::Prepare(prepare) => {
            json.string("type", "prepare")
                .number("typeId", 12)
                .number("amount", prepare.amount())
                .string("expiresAt", &prepare.expires_at().to_iso8601())
                .hex("executionCondition", prepare.execution_condition())
                .string("destination", prepare.destination())
                .hex("data", prepare.data());
            if ildcp::is_request(&prepare) {
                json.boolean("ildcpRequest", true);
            }
        }
        ilp::Packet::Fulfill(fulfill) => {
            json.string("type", "fulfill")
                .number("typeId", 13)
                .hex("fulfillment", fulfill.fulfillment())
                .hex("data", fulfill.data());
            if !fulfill.data().is_empty() {
                if let Ok(response) = ildcp::IldcpResponse::parse(fulfill.data()) {
                    let mut ildcp = Object::new();
                    ildcp
                        .string("clientAddress", response.client_address.as_str())
                        .number("assetScale", u64::from(response.asset_scale))
                        .string("assetCode", &response.asset_code);
                    json.object("ildcp", ildcp);
                }
            }
        }
        ilp::Packet::Reject(reject) => {
            json.string("type", "reject")
                .number("typeId", 14)
                .string("code", reject.code().as_str());
            if let Some(name) = reject.code().name() {
                json.string("codeName", name);
            }
            json.string("triggeredBy", reject.triggered_by())
                .string("message", reject.message())
                .hex("data", reject.data());
            if reject.code() == ErrorCode::F08_AMOUNT_TOO_LARGE {
                if let Ok(details) = MaxPacketAmountDetails::parse(reject.data()) {
                    let mut amounts = Object::new();
                    amounts
                        .number("receivedAmount", details.received)
                        .number("maximumAmount", details.maximum);
                    json.object("amountTooLarge", amounts);
                }
            }
        }
    }
    json
}

fn btp_json(packet: btp::Packet<'_>) -> Object {
    let mut json = Object::new();
    let (name, type_id) = match packet.packet_type() {
        btp::PacketType::Response => ("response", 1),
        btp::PacketType::Error => ("error", 2),
        btp::PacketType::Message => ("message", 6),
        btp::PacketType::Transfer => ("transfer", 7),
    };
    json.string("layer", "btp")
        .string("type", name)
        .number("typeId", type_id)
        .number("requestId", u64::from(packet.request_id()));
    match packet {
        btp::Packet::Transfer(transfer) => {
            json.number("amount", transfer.amount());
        }
        btp::Packet::Error(error) => {
            json.string("code", error.code().as_str());
            if let Some(name) = error.code().name() {
                json.string("codeName", name);
            }
            json.string("name", error.name())
                .string("triggeredAt", &error.triggered_at().to_iso8601())
                .hex("data", error.data());
            if let Ok(text) = std::str::from_utf8(error.data()) {
                json.string("dataText", text);
            }
        }
        btp::Packet::Response(_) | btp::Packet::Message(_) => {}
    }
    json.objects("protocolData", protocol_data_json(packet.protocol_data()));
    json
}

fn protocol_data_json(protocol_data: ProtocolData<'_>) -> Vec<Object> {
    protocol_data
        .iter()
        .map(|entry| {
            let mut json = Object::new();
            json.string("name", entry.name)
                .number("contentType", u64::from(entry.content_type.to_byte()));
            if let Some(mime) = entry.content_type.mime_type() {
                json.string("mimeType", mime);
            }
            json.hex("data", entry.data);
            if entry.content_type.is_text() {
                // Text and JSON entries are checked for UTF-8 when parsed.
                json.string("text", entry.data_as_str().unwrap_or_default());
            }
            if entry.name == btp::ILP {
                match ilp::Packet::parse(entry.data) {
                    Ok(packet) => {
                        json.object("ilp", ilp_json(packet));
                    }
                    Err(e) => {
                        json.string("ilpError", &e.to_string());
                    }
                }
            }
            json
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_layers_apart_by_the_first_byte() {
        let fulfill = format!("0d21{}00", "00".repeat(32));
        assert!(decode_hex(&fulfill)
            .unwrap()
            .starts_with(r#"{"layer":"ilp","type":"fulfill""#));
        assert!(decode_hex("0100000001020100")
            .unwrap()
            .starts_with(r#"{"layer":"btp","type":"response""#));
        let err = decode_hex("05").unwrap_err().0;
        assert!(
            err.starts_with("unknown packet type 5 at offset 0"),
            "{err}"
        );
        assert!(decode_hex(" \n").unwrap_err().0.starts_with("no input"));
    }
}
