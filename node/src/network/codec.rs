//! [`FrameCodec`]: length-prefixed request-response frames with explicit size limits.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;
use libp2p::StreamProtocol;
use prometheus_client::metrics::counter::Counter;

/// Length-prefixed frames (4-byte big-endian length) with explicit size limits, for
/// `/kith/dm/1` and `/kith/mailbox/1`.
#[derive(Clone, Debug)]
pub struct FrameCodec {
    max_request: usize,
    max_response: usize,
    /// Counts frames refused as they are read: over the limit, or cut off after their length.
    rejected: Option<Counter>,
}

impl FrameCodec {
    /// A codec with these limits (the benchmark's bare libp2p exchange uses it too).
    pub fn new(max_request: usize, max_response: usize) -> Self {
        FrameCodec { max_request, max_response, rejected: None }
    }

    /// The same codec, counting refused frames in `rejected`. libp2p reports no event for a
    /// request that fails to read (it has no request id yet), so the codec counts them itself.
    pub fn counting(self, rejected: Counter) -> Self {
        FrameCodec { rejected: Some(rejected), ..self }
    }

    async fn read<T: AsyncRead + Unpin + Send>(
        &self,
        io: &mut T,
        max: usize,
    ) -> std::io::Result<Vec<u8>> {
        let read = read_frame(io, max).await;
        if let (Err(e), Some(counter)) = (&read, &self.rejected) {
            if matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) {
                counter.inc();
            }
        }
        read
    }
}

/// Reads one frame of at most `max` bytes. A frame over the limit is `InvalidData`; a stream
/// that ends inside a frame (after its length) is `UnexpectedEof`; one that ends before a
/// frame begins is `BrokenPipe`, not a refused frame.
async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the stream ended before a frame")
        }
        _ => e,
    })?;
    let n = u32::from_be_bytes(len) as usize;
    if n > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {n} bytes exceeds the limit of {max}"),
        ));
    }
    let mut buf = vec![0u8; n];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    data: &[u8],
    max: usize,
) -> std::io::Result<()> {
    if data.len() > max {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"));
    }
    let len = u32::try_from(data.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(data).await?;
    io.flush().await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read(io, self.max_request).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read(io, self.max_response).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req, self.max_request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res, self.max_response).await
    }
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;
    use request_response::Codec;

    use super::*;

    fn read(codec: &mut FrameCodec, bytes: Vec<u8>) -> std::io::Result<Vec<u8>> {
        let proto = StreamProtocol::new("/kith/dm/1");
        futures::executor::block_on(codec.read_request(&proto, &mut Cursor::new(bytes)))
    }

    #[test]
    fn refused_frames_are_counted_and_a_closed_stream_is_not() {
        let counter = Counter::default();
        let mut codec = FrameCodec::new(8, 8).counting(counter.clone());
        let frame = |n: u32, body: &[u8]| [&n.to_be_bytes()[..], body].concat();
        assert_eq!(read(&mut codec, frame(3, b"abc")).expect("a frame"), b"abc");
        assert_eq!(counter.get(), 0);
        // Over the limit: refused before its body is read.
        let e = read(&mut codec, frame(9, b"")).expect_err("too large");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(counter.get(), 1);
        // Cut off inside the frame.
        read(&mut codec, frame(5, b"ab")).expect_err("truncated");
        assert_eq!(counter.get(), 2);
        // A stream that ends before any frame is not a refused frame.
        read(&mut codec, Vec::new()).expect_err("empty");
        assert_eq!(counter.get(), 2);
    }
}
