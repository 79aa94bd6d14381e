//! The codec of every generated client and server: prost's, except that a message that does
//! not decode is marked as such. tonic reports it as INTERNAL, but on a server it is the
//! caller's fault; the server's decode-error layer (`ts_runtime::layers`) turns a marked
//! INTERNAL into INVALID_ARGUMENT without reading the message text. On a client the mark
//! stays local and the status stays INTERNAL: a reply that does not decode is our fault.

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Metadata key that marks a status as "the message did not decode".
pub const UNDECODABLE: &str = "x-teamshare-undecodable";

/// prost's codec, with decode failures marked.
#[derive(Debug, Clone)]
pub struct MarkingCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for MarkingCodec<T, U> {
    fn default() -> Self {
        MarkingCodec(ProstCodec::default())
    }
}

impl<T, U> Codec for MarkingCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = MarkingDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        MarkingDecoder(self.0.decoder())
    }
}

/// prost's decoder, with decode failures marked.
#[derive(Debug, Clone)]
pub struct MarkingDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for MarkingDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(mark_undecodable)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// `status` marked as a decode failure.
pub fn mark_undecodable(mut status: Status) -> Status {
    status.metadata_mut().insert(UNDECODABLE, tonic::metadata::MetadataValue::from_static("1"));
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_statuses_carry_the_mark_into_their_headers() {
        let status = mark_undecodable(Status::internal("anything at all"));
        let response = status.into_http::<()>();
        assert_eq!(response.headers().get(UNDECODABLE).unwrap(), "1");
        assert_eq!(response.headers().get("grpc-status").unwrap(), "13");
    }
}
