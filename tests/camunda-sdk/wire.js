'use strict';
/**
 * A loopback TCP relay between the SDK and the gateway that reads the client's half of each
 * HTTP/2 connection and tallies the gRPC request messages it carries, so the scenario can prove
 * that requests really went gzip-compressed rather than trusting the SDK's channel options.
 *
 * What is checked per request message (gRPC over HTTP/2 length-prefixed framing): the compressed
 * flag byte (1 = compressed with the call's grpc-encoding), that the payload starts with the gzip
 * magic bytes 1f 8b, and that it inflates with zlib's gunzip. HPACK-encoded headers are not
 * decoded; the flag, the magic and a successful gunzip together say "gzip" unambiguously.
 *
 * Bytes are forwarded unchanged in both directions; the relay only observes. Traffic stays on
 * 127.0.0.1. Every connection is bounded by the lifetime of the two sockets; `close()` ends them.
 */

const net = require('node:net');
const zlib = require('node:zlib');

const HTTP2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const FRAME_HEADER_BYTES = 9;
const FRAME_TYPE_DATA = 0x0;
const FRAME_TYPE_HEADERS = 0x1;
const FLAG_PADDED = 0x8;
const GRPC_PREFIX_BYTES = 5;
const GZIP_MAGIC = [0x1f, 0x8b];
// A request the scenarios send is at most a few KiB; a bigger length prefix means we misparsed.
const GRPC_MESSAGE_BYTES_MAX = 4 * 1024 * 1024;

class WireTally {
  constructor() {
    this.connections = 0;
    this.requestStreams = 0; // HEADERS frames that opened a client stream
    this.messages = 0; // gRPC request messages seen
    this.gzipMessages = 0; // flag 1, gzip magic, and gunzip succeeded
    this.uncompressedMessages = 0; // flag 0
    this.badMessages = []; // flag 1 but not gzip, or a parse problem: short descriptions
  }

  summary() {
    return (
      `${this.connections} connections, ${this.requestStreams} request streams, ` +
      `${this.messages} request messages: ${this.gzipMessages} gzip, ` +
      `${this.uncompressedMessages} uncompressed, ${this.badMessages.length} malformed`
    );
  }
}

/** Parses the client-to-server byte stream of one HTTP/2 connection. */
class ClientStreamParser {
  constructor(tally) {
    this.tally = tally;
    this.buffer = Buffer.alloc(0);
    this.prefaceSeen = false;
    this.streams = new Map(); // stream id -> Buffer of not yet complete gRPC message bytes
    this.broken = false;
  }

  push(chunk) {
    if (this.broken) return;
    this.buffer = Buffer.concat([this.buffer, chunk]);
    if (!this.prefaceSeen) {
      if (this.buffer.length < HTTP2_PREFACE.length) return;
      if (!this.buffer.subarray(0, HTTP2_PREFACE.length).equals(HTTP2_PREFACE)) {
        return this.fail('connection did not start with the HTTP/2 preface (not h2c?)');
      }
      this.buffer = this.buffer.subarray(HTTP2_PREFACE.length);
      this.prefaceSeen = true;
    }
    while (this.buffer.length >= FRAME_HEADER_BYTES) {
      const length = this.buffer.readUIntBE(0, 3);
      if (this.buffer.length < FRAME_HEADER_BYTES + length) return;
      const type = this.buffer[3];
      const flags = this.buffer[4];
      const streamId = this.buffer.readUInt32BE(5) & 0x7fffffff;
      const payload = this.buffer.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + length);
      this.buffer = this.buffer.subarray(FRAME_HEADER_BYTES + length);
      if (type === FRAME_TYPE_HEADERS && !this.streams.has(streamId)) {
        this.streams.set(streamId, Buffer.alloc(0));
        this.tally.requestStreams += 1;
      } else if (type === FRAME_TYPE_DATA) {
        this.onData(streamId, flags, payload);
      }
    }
  }

  onData(streamId, flags, payload) {
    let data = payload;
    if (flags & FLAG_PADDED) {
      const padBytes = data[0];
      data = data.subarray(1, data.length - padBytes);
    }
    let pending = Buffer.concat([this.streams.get(streamId) ?? Buffer.alloc(0), data]);
    while (pending.length >= GRPC_PREFIX_BYTES) {
      const compressed = pending[0];
      const length = pending.readUInt32BE(1);
      if (length > GRPC_MESSAGE_BYTES_MAX) {
        return this.fail(`stream ${streamId}: gRPC length prefix ${length} is implausible`);
      }
      if (pending.length < GRPC_PREFIX_BYTES + length) break;
      this.onMessage(streamId, compressed, pending.subarray(GRPC_PREFIX_BYTES, GRPC_PREFIX_BYTES + length));
      pending = pending.subarray(GRPC_PREFIX_BYTES + length);
    }
    this.streams.set(streamId, Buffer.from(pending));
  }

  onMessage(streamId, compressed, body) {
    const tally = this.tally;
    tally.messages += 1;
    if (compressed === 0) {
      tally.uncompressedMessages += 1;
      return;
    }
    if (compressed !== 1) {
      tally.badMessages.push(`stream ${streamId}: compressed flag ${compressed}`);
      return;
    }
    if (body.length < 2 || body[0] !== GZIP_MAGIC[0] || body[1] !== GZIP_MAGIC[1]) {
      tally.badMessages.push(`stream ${streamId}: flag 1 but no gzip magic (${body.subarray(0, 4).toString('hex')})`);
      return;
    }
    try {
      zlib.gunzipSync(body);
      tally.gzipMessages += 1;
    } catch (error) {
      tally.badMessages.push(`stream ${streamId}: gzip payload does not inflate: ${error.message}`);
    }
  }

  fail(reason) {
    this.broken = true;
    this.tally.badMessages.push(reason);
  }
}

/**
 * Starts the relay on 127.0.0.1 (an ephemeral port) in front of `upstreamPort` on 127.0.0.1.
 * Resolves to { port, tally, close() }.
 */
function startGzipTap(upstreamPort) {
  const tally = new WireTally();
  const sockets = new Set();
  const server = net.createServer((client) => {
    tally.connections += 1;
    const parser = new ClientStreamParser(tally);
    const upstream = net.connect({ host: '127.0.0.1', port: upstreamPort });
    sockets.add(client);
    sockets.add(upstream);
    const teardown = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    // pipe() forwards with backpressure; the extra 'data' listener only observes.
    client.on('data', (chunk) => parser.push(chunk));
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('error', teardown);
    upstream.on('error', teardown);
    client.on('close', teardown);
    upstream.on('close', teardown);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      resolve({
        port: server.address().port,
        tally,
        close: () =>
          new Promise((done) => {
            for (const socket of sockets) socket.destroy();
            server.close(() => done());
          }),
      });
    });
  });
}

module.exports = { startGzipTap };
