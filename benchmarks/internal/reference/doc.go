// Package reference is the baseline that spriteproxy's benchmarks measure
// against: a Sprites v1 proxy tunnel built the way the reference Sprites Go
// SDK builds it, on both ends.
//
// What it models, and nothing more:
//   - gorilla/websocket on both ends, with 1 MiB read and write buffers
//     (websocket.Dialer and websocket.Upgrader with ReadBufferSize and
//     WriteBufferSize of 1<<20), allocated per connection as gorilla does
//     when no buffer pool is set;
//   - a fresh WebSocket per stream: GET {base}/v1/sprites/{name}/proxy with
//     a bearer token, then the client's text message {"host":...,"port":...}
//     and the server's reply {"status":"connected","target":...};
//   - on the client, a net.Conn whose Write is one WriteMessage(BinaryMessage,
//     p) and whose Read drains the current message's reader and then asks
//     NextReader for the next one (the SDK's proxyConn);
//   - a port forwarder (the SDK's ProxyPort): a local listener, and for each
//     accepted connection a fresh tunnel and one io.Copy goroutine per
//     direction;
//   - on the server, one goroutine per direction: target to WebSocket reads
//     into a 32 KiB buffer and sends each read as one binary message;
//     WebSocket to target takes NextReader per message and io.Copy's it.
//
// It has no half-close (end of stream is the close frame), no keep-alive and
// no buffer pooling, as the reference does not. It is for benchmarks only:
// it checks little and is not hardened.
package reference
