// MessagePack for the k6 scenarios (k6 ships no codec).
//
// Covers what roomcast's envelopes use and the other common types, so a
// server envelope never surprises the decoder:
//
//   JS value                          MessagePack
//   object with string keys     <->   map (keys are str)
//   Array                       <->   array
//   string                      <->   str (UTF-8)
//   Uint8Array, ArrayBuffer      ->   bin 8/16/32 (decoded as Uint8Array)
//   integer Number              <->   positive/negative fixint, uint 8-64, int 8-64
//   other Number                <->   float 64 (float 32 is decoded too)
//   true, false                 <->   bool
//   null, undefined              ->   nil (decoded as null)
//
// Integers must lie within Number's safe range (|n| < 2^53): the encoder
// refuses larger ones and the decoder throws on them rather than round.
// Extension types are refused. The decoder is strict: a repeated map key, a
// non-string key, invalid UTF-8, a truncated value or bytes after the value
// all throw, so a malformed server envelope is never half-read.

const TWO_32 = 4294967296;

/** Encodes `value` into a new Uint8Array. */
export function encode(value) {
  const writer = new Writer();
  writer.value(value);
  return writer.bytes();
}

/** Decodes the single MessagePack value held in `input` (ArrayBuffer or Uint8Array). */
export function decode(input) {
  const reader = new Reader(toBytes(input));
  const value = reader.value();
  if (reader.pos !== reader.bytes.length) {
    throw new Error(`msgpack: ${reader.bytes.length - reader.pos} bytes after the value`);
  }
  return value;
}

/** UTF-8 bytes of `text` (lone surrogates become U+FFFD, as in TextEncoder). */
export function utf8Encode(text) {
  const out = [];
  for (let i = 0; i < text.length; i++) {
    let c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const low = text.charCodeAt(i + 1);
      if (low >= 0xdc00 && low <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (low - 0xdc00);
        i++;
      }
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      c = 0xfffd;
    }
    if (c < 0x80) {
      out.push(c);
    } else if (c < 0x800) {
      out.push(0xc0 | (c >> 6), 0x80 | (c & 0x3f));
    } else if (c < 0x10000) {
      out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
    } else {
      out.push(
        0xf0 | (c >> 18),
        0x80 | ((c >> 12) & 0x3f),
        0x80 | ((c >> 6) & 0x3f),
        0x80 | (c & 0x3f),
      );
    }
  }
  return new Uint8Array(out);
}

/** The string held in UTF-8 `bytes[start, end)`; throws on invalid UTF-8. */
export function utf8Decode(bytes, start = 0, end = bytes.length) {
  // UTF-16 code units, turned into a string a chunk at a time: appending
  // one character at a time is quadratic in k6's JavaScript engine.
  const units = [];
  const chunks = [];
  let i = start;
  while (i < end) {
    const b = bytes[i];
    let c;
    let extra;
    let min;
    if (b < 0x80) {
      c = b;
      extra = 0;
      min = 0;
    } else if (b >= 0xc2 && b <= 0xdf) {
      c = b & 0x1f;
      extra = 1;
      min = 0x80;
    } else if (b >= 0xe0 && b <= 0xef) {
      c = b & 0x0f;
      extra = 2;
      min = 0x800;
    } else if (b >= 0xf0 && b <= 0xf4) {
      c = b & 0x07;
      extra = 3;
      min = 0x10000;
    } else {
      throw new Error(`msgpack: invalid UTF-8 byte 0x${b.toString(16)}`);
    }
    if (i + extra >= end && extra > 0) {
      throw new Error('msgpack: truncated UTF-8 sequence');
    }
    for (let k = 1; k <= extra; k++) {
      const next = bytes[i + k];
      if ((next & 0xc0) !== 0x80) {
        throw new Error('msgpack: invalid UTF-8 continuation byte');
      }
      c = (c << 6) | (next & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
      throw new Error('msgpack: invalid UTF-8 sequence');
    }
    if (c < 0x10000) {
      units.push(c);
    } else {
      c -= 0x10000;
      units.push(0xd800 + (c >> 10), 0xdc00 + (c & 0x3ff));
    }
    if (units.length >= 4096) {
      chunks.push(String.fromCharCode.apply(null, units));
      units.length = 0;
    }
    i += extra + 1;
  }
  chunks.push(String.fromCharCode.apply(null, units));
  return chunks.length === 1 ? chunks[0] : chunks.join('');
}

function toBytes(input) {
  if (input instanceof Uint8Array) {
    return input;
  }
  if (input instanceof ArrayBuffer) {
    return new Uint8Array(input);
  }
  if (ArrayBuffer.isView(input)) {
    return new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  }
  throw new TypeError(`msgpack: cannot decode a ${typeof input}`);
}

/** A growable output buffer. */
class Writer {
  constructor() {
    this.buf = new Uint8Array(64);
    this.view = new DataView(this.buf.buffer);
    this.pos = 0;
  }

  bytes() {
    return this.buf.slice(0, this.pos);
  }

  reserve(n) {
    if (this.pos + n <= this.buf.length) {
      return;
    }
    let size = this.buf.length * 2;
    while (size < this.pos + n) {
      size *= 2;
    }
    const grown = new Uint8Array(size);
    grown.set(this.buf.subarray(0, this.pos));
    this.buf = grown;
    this.view = new DataView(grown.buffer);
  }

  u8(b) {
    this.reserve(1);
    this.buf[this.pos++] = b;
  }

  u16(n) {
    this.reserve(2);
    this.view.setUint16(this.pos, n);
    this.pos += 2;
  }

  u32(n) {
    this.reserve(4);
    this.view.setUint32(this.pos, n);
    this.pos += 4;
  }

  raw(bytes) {
    this.reserve(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  value(v) {
    if (v === null || v === undefined) {
      this.u8(0xc0);
    } else if (v === false) {
      this.u8(0xc2);
    } else if (v === true) {
      this.u8(0xc3);
    } else if (typeof v === 'number') {
      this.number(v);
    } else if (typeof v === 'string') {
      this.str(v);
    } else if (v instanceof Uint8Array) {
      this.bin(v);
    } else if (v instanceof ArrayBuffer || ArrayBuffer.isView(v)) {
      this.bin(toBytes(v));
    } else if (Array.isArray(v)) {
      this.header(v.length, 0x90, 15, 0xdc, 0xdd);
      for (const item of v) {
        this.value(item);
      }
    } else if (typeof v === 'object') {
      const keys = Object.keys(v);
      this.header(keys.length, 0x80, 15, 0xde, 0xdf);
      for (const key of keys) {
        this.str(key);
        this.value(v[key]);
      }
    } else {
      throw new TypeError(`msgpack: cannot encode a ${typeof v}`);
    }
  }

  /** A length header: fix form up to `fixMax`, then 16- and 32-bit forms. */
  header(length, fix, fixMax, tag16, tag32) {
    if (length <= fixMax) {
      this.u8(fix | length);
    } else if (length <= 0xffff) {
      this.u8(tag16);
      this.u16(length);
    } else {
      this.u8(tag32);
      this.u32(length);
    }
  }

  number(n) {
    if (!Number.isInteger(n)) {
      this.u8(0xcb);
      this.reserve(8);
      this.view.setFloat64(this.pos, n);
      this.pos += 8;
      return;
    }
    if (!Number.isSafeInteger(n)) {
      throw new RangeError(`msgpack: integer ${n} is outside the safe range`);
    }
    if (n >= 0) {
      if (n <= 0x7f) {
        this.u8(n);
      } else if (n <= 0xff) {
        this.u8(0xcc);
        this.u8(n);
      } else if (n <= 0xffff) {
        this.u8(0xcd);
        this.u16(n);
      } else if (n <= 0xffffffff) {
        this.u8(0xce);
        this.u32(n);
      } else {
        this.u8(0xcf);
        this.u32(Math.floor(n / TWO_32));
        this.u32(n % TWO_32);
      }
    } else if (n >= -32) {
      this.u8(n & 0xff);
    } else if (n >= -0x80) {
      this.u8(0xd0);
      this.u8(n & 0xff);
    } else if (n >= -0x8000) {
      this.u8(0xd1);
      this.u16(n & 0xffff);
    } else if (n >= -0x80000000) {
      this.u8(0xd2);
      this.u32(n >>> 0);
    } else {
      // Two's complement over 64 bits: a negative high word, a low word in [0, 2^32).
      const high = Math.floor(n / TWO_32);
      this.u8(0xd3);
      this.u32(high >>> 0);
      this.u32(n - high * TWO_32);
    }
  }

  str(s) {
    const bytes = utf8Encode(s);
    const n = bytes.length;
    if (n <= 31) {
      this.u8(0xa0 | n);
    } else if (n <= 0xff) {
      this.u8(0xd9);
      this.u8(n);
    } else if (n <= 0xffff) {
      this.u8(0xda);
      this.u16(n);
    } else {
      this.u8(0xdb);
      this.u32(n);
    }
    this.raw(bytes);
  }

  bin(bytes) {
    const n = bytes.length;
    if (n <= 0xff) {
      this.u8(0xc4);
      this.u8(n);
    } else if (n <= 0xffff) {
      this.u8(0xc5);
      this.u16(n);
    } else {
      this.u8(0xc6);
      this.u32(n);
    }
    this.raw(bytes);
  }
}

/** A cursor over the input; every read checks the bounds. */
class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }

  need(n) {
    if (this.pos + n > this.bytes.length) {
      throw new Error(`msgpack: truncated value at byte ${this.pos}`);
    }
  }

  u8() {
    this.need(1);
    return this.bytes[this.pos++];
  }

  u16() {
    this.need(2);
    const n = this.view.getUint16(this.pos);
    this.pos += 2;
    return n;
  }

  u32() {
    this.need(4);
    const n = this.view.getUint32(this.pos);
    this.pos += 4;
    return n;
  }

  safe(n) {
    if (!Number.isSafeInteger(n)) {
      throw new RangeError(`msgpack: integer at byte ${this.pos - 8} is outside the safe range`);
    }
    return n;
  }

  value() {
    const tag = this.u8();
    if (tag <= 0x7f) {
      return tag;
    }
    if (tag >= 0xe0) {
      return tag - 0x100;
    }
    if ((tag & 0xf0) === 0x80) {
      return this.map(tag & 0x0f);
    }
    if ((tag & 0xf0) === 0x90) {
      return this.array(tag & 0x0f);
    }
    if ((tag & 0xe0) === 0xa0) {
      return this.str(tag & 0x1f);
    }
    switch (tag) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4:
        return this.bin(this.u8());
      case 0xc5:
        return this.bin(this.u16());
      case 0xc6:
        return this.bin(this.u32());
      case 0xca: {
        this.need(4);
        const f = this.view.getFloat32(this.pos);
        this.pos += 4;
        return f;
      }
      case 0xcb: {
        this.need(8);
        const f = this.view.getFloat64(this.pos);
        this.pos += 8;
        return f;
      }
      case 0xcc:
        return this.u8();
      case 0xcd:
        return this.u16();
      case 0xce:
        return this.u32();
      case 0xcf: {
        const high = this.u32();
        return this.safe(high * TWO_32 + this.u32());
      }
      case 0xd0:
        return (this.u8() << 24) >> 24;
      case 0xd1:
        return (this.u16() << 16) >> 16;
      case 0xd2:
        return this.u32() | 0;
      case 0xd3: {
        const high = this.u32() | 0;
        return this.safe(high * TWO_32 + this.u32());
      }
      case 0xd9:
        return this.str(this.u8());
      case 0xda:
        return this.str(this.u16());
      case 0xdb:
        return this.str(this.u32());
      case 0xdc:
        return this.array(this.u16());
      case 0xdd:
        return this.array(this.u32());
      case 0xde:
        return this.map(this.u16());
      case 0xdf:
        return this.map(this.u32());
      default:
        throw new Error(`msgpack: unsupported type byte 0x${tag.toString(16)} at byte ${this.pos - 1}`);
    }
  }

  str(n) {
    this.need(n);
    const s = utf8Decode(this.bytes, this.pos, this.pos + n);
    this.pos += n;
    return s;
  }

  /** A view into the input, not a copy. */
  bin(n) {
    this.need(n);
    const b = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  array(n) {
    const out = [];
    for (let i = 0; i < n; i++) {
      out.push(this.value());
    }
    return out;
  }

  map(n) {
    // No prototype, so a key such as "__proto__" is an ordinary entry.
    const out = Object.create(null);
    for (let i = 0; i < n; i++) {
      const at = this.pos;
      const key = this.value();
      if (typeof key !== 'string') {
        throw new Error(`msgpack: map key at byte ${at} is not a string`);
      }
      if (key in out) {
        throw new Error(`msgpack: repeated map key "${key}"`);
      }
      out[key] = this.value();
    }
    return out;
  }
}
