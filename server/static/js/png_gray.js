// A single-channel (grayscale, 8-bit) PNG encoder: what the API returns for masks, and what image mode's
// "Download mask" saves. A canvas can only write RGBA PNGs, so the file is built here: the PNG signature, an
// IHDR chunk (colour type 0, bit depth 8), the rows (filter byte 0 each) zlib-compressed with the browser's
// CompressionStream("deflate"), and IEND.

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 255] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  out.set(new TextEncoder().encode(type), 4);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

async function deflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Grayscale pixels (Uint8Array, row-major, width*height) -> a PNG Blob of colour type 0. */
export async function grayPng(pixels, width, height) {
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header.set([8, 0, 0, 0, 0], 8); // bit depth 8, grayscale, deflate, adaptive filtering, no interlace
  const rows = new Uint8Array((width + 1) * height);
  for (let y = 0; y < height; y++) rows.set(pixels.subarray(y * width, (y + 1) * width), y * (width + 1) + 1);
  const signature = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
  const parts = [signature, chunk("IHDR", header), chunk("IDAT", await deflate(rows)), chunk("IEND", new Uint8Array())];
  return new Blob(parts, { type: "image/png" });
}

/** The union of 0/1 masks (each width*height) as a 0/255 single-channel PNG Blob. */
export function unionMaskPng(masks, width, height) {
  const pixels = new Uint8Array(width * height);
  for (const bits of masks) for (let p = 0; p < pixels.length; p++) if (bits[p]) pixels[p] = 255;
  return grayPng(pixels, width, height);
}
