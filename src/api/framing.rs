//! Responses framed from bytes encoded once.
//!
//! Stored records are kept in their protobuf encoding, and the shared tail (`tail.rs`) keeps
//! each new event or record encoded once for every stream of its carrier. A response of
//! `WatchNumbers`, `StreamCallRecords` or `StreamQualityRecords` is therefore assembled from
//! those bytes instead of from decoded messages: protobuf defines a message as the
//! concatenation of its fields, so `records { cursor, <stored bytes> } ... next_cursor` is a
//! valid `StreamCallRecordsResponse` however its parts were made.
//!
//! The servers of those RPCs are generated a second time (build.rs) with [`Framed`] as the
//! response type and [`FramedCodec`] as the codec; clients, reflection and every other message
//! keep the ordinary generated types, so carriers see the same contract.

use std::marker::PhantomData;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{
    DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint, key_len,
};
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// The generated servers whose streamed responses are [`Framed`].
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub(crate) mod servers {
    include!(concat!(env!("OUT_DIR"), "/framed/opconnect.v1.rs"));
}

/// Where an encoded response starts: small, because most streams are idle most of the time
/// and each holds one such buffer; it grows to the size of the largest message sent.
const ENCODE_BUFFER_BYTES: usize = 1024;
/// tonic's default: ready messages are batched into writes of up to this size.
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

/// A response message assembled from already-encoded fields.
#[derive(Debug, Clone, Default)]
pub(crate) struct Framed {
    parts: Vec<Bytes>,
    len: usize,
    /// Events or records it carries, for the delivery metrics.
    items: u64,
    /// The first and last position (cursor or revision) of its items, for the audit log.
    positions: Option<(i64, i64)>,
}

impl Framed {
    /// Appends one element of the message's repeated field, as made by [`frame_item`], at
    /// `position` (its cursor or revision).
    pub(crate) fn push_item(&mut self, item: Bytes, position: i64) {
        self.items += 1;
        self.positions = Some(match self.positions {
            Some((first, _)) => (first, position),
            None => (position, position),
        });
        self.push_field(item);
    }

    /// The first and last position of its items.
    pub(crate) fn positions(&self) -> Option<(i64, i64)> {
        self.positions
    }

    /// Appends an encoded field that is not an item (a resume point, a checkpoint).
    pub(crate) fn push_field(&mut self, field: Bytes) {
        self.len += field.len();
        self.parts.push(field);
    }

    /// Events or records carried.
    pub(crate) fn items(&self) -> u64 {
        self.items
    }

    /// Encoded size so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Message for Framed {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for part in &self.parts {
            buf.put_slice(part);
        }
    }

    /// Never decoded: the server only sends these. Skipping keeps a stray decode harmless.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// One element of repeated message field `tag`: its key and length, then `head` (fields
/// encoded for this response, such as a record's cursor), then `body` (the element's encoding
/// as stored). A message's fields may come in any order, so `head` sets what `body` omits.
pub(crate) fn frame_item(tag: u32, head: &[u8], body: &[u8]) -> Bytes {
    let inner = head.len() + body.len();
    let mut out = BytesMut::with_capacity(item_len(tag, inner));
    put_item_head(&mut out, tag, inner);
    out.put_slice(head);
    out.put_slice(body);
    out.freeze()
}

/// The encoded length of an element of repeated message field `tag` whose own encoding is
/// `inner` bytes long.
pub(crate) fn item_len(tag: u32, inner: usize) -> usize {
    key_len(tag) + encoded_len_varint(inner as u64) + inner
}

/// The key and length of an element of repeated message field `tag`, `inner` bytes long;
/// its fields follow.
pub(crate) fn put_item_head(out: &mut impl BufMut, tag: u32, inner: usize) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(inner as u64, out);
}

/// An `int64` field, omitted at 0 as proto3 does.
pub(crate) fn int64_field(tag: u32, value: i64) -> Bytes {
    let mut out = BytesMut::with_capacity(11);
    put_int64_field(&mut out, tag, value);
    out.freeze()
}

/// Writes an `int64` field, omitted at 0 as proto3 does.
pub(crate) fn put_int64_field(out: &mut impl BufMut, tag: u32, value: i64) {
    if value != 0 {
        encode_key(tag, WireType::Varint, out);
        #[allow(clippy::cast_sign_loss)] // int64 is encoded as its two's complement u64
        encode_varint(value as u64, out);
    }
}

/// The encoded length of what [`put_int64_field`] writes.
pub(crate) fn int64_field_len(tag: u32, value: i64) -> usize {
    #[allow(clippy::cast_sign_loss)] // as encoded
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value as u64)
    }
}

/// A message field, encoded.
pub(crate) fn message_field(tag: u32, message: &impl Message) -> Bytes {
    frame_item(tag, &[], &message.encode_to_vec())
}

/// The codec of the framed servers: prost's, with a small initial encode buffer (see
/// [`ENCODE_BUFFER_BYTES`]).
#[derive(Debug)]
pub(crate) struct FramedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for FramedCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for FramedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(
            ENCODE_BUFFER_BYTES,
            YIELD_THRESHOLD_BYTES,
        ))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::v1 as pb;

    fn record(call_id: &str) -> pb::CallRecord {
        pb::CallRecord {
            call_id: call_id.into(),
            tenant_id: "t".into(),
            caller_number: "+14255550100".into(),
            duration: Some(prost_types::Duration {
                seconds: 61,
                nanos: 5,
            }),
            successful: true,
            ..Default::default()
        }
    }

    /// Records framed from their stored encoding (cursor 0) with the cursor as head decode as
    /// the response a carrier would get from the ordinary generated types.
    #[test]
    fn framed_records_decode_as_the_ordinary_response() {
        let mut framed = Framed::default();
        let mut expected = pb::StreamCallRecordsResponse::default();
        for (cursor, id) in [(1, "a"), (2, "b"), (300, "c")] {
            let stored = record(id).encode_to_vec();
            framed.push_item(frame_item(1, &int64_field(1, cursor), &stored), cursor);
            expected.records.push(pb::CallRecord {
                cursor,
                ..record(id)
            });
        }
        framed.push_field(int64_field(2, 300));
        expected.next_cursor = 300;
        let bytes = framed.encode_to_vec();
        assert_eq!(framed.encoded_len(), bytes.len());
        assert_eq!(framed.items(), 3);
        assert_eq!(framed.positions(), Some((1, 300)));
        let decoded = pb::StreamCallRecordsResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, expected);
        assert_eq!(bytes, expected.encode_to_vec());
    }

    /// A checkpoint alone, and negative or zero integers, frame like prost encodes them.
    #[test]
    fn fields_encode_like_prost() {
        let checkpoint = pb::WatchCheckpoint {
            r#type: 2,
            revision: -5,
        };
        let mut framed = Framed::default();
        framed.push_field(message_field(2, &checkpoint));
        let expected = pb::WatchNumbersResponse {
            events: Vec::new(),
            checkpoint: Some(checkpoint),
        };
        assert_eq!(framed.encode_to_vec(), expected.encode_to_vec());
        assert!(int64_field(2, 0).is_empty());
    }
}
