//! Fixtures and helpers shared by the scenario tests.
#![allow(dead_code)]

#[cfg(feature = "async")]
pub mod hooked;
pub mod s3;

use proptest::prelude::*;

/// Seed 000's example `file_content`: 47 characters of unpadded base64, 35 bytes.
pub const SEED_000_CONTENT: &str = "iVBORw0KGgoAAAANSUhEUgAAADAAAABAgMAAADW0NTUAAAA";

/// The PNG signature.
pub const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// A JPEG start: SOI and the start of an APP0 JFIF segment.
pub const JPEG_START: &[u8] = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00";

/// `len` bytes starting with `header`, the rest pseudo-random.
pub fn file_with_header(header: &[u8], len: usize) -> Vec<u8> {
    let mut data = header[..header.len().min(len)].to_vec();
    let mut x: u32 = 0x1234_5678;
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.push((x >> 24) as u8);
    }
    data
}

/// Splits `data` at the given cut points (taken modulo the length, sorted, deduplicated).
pub fn split_at_points<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut pieces = Vec::new();
    let mut start = 0;
    for p in points {
        pieces.push(&data[start..p]);
        start = p;
    }
    pieces.push(&data[start..]);
    pieces
}

/// Cut points for [`split_at_points`]: up to 12 of them.
pub fn cuts() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(any::<usize>(), 0..12)
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Appends one PNG chunk: length, type, data, CRC.
pub fn png_chunk(out: &mut Vec<u8>, ty: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(ty);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(ty);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

/// IHDR data.
pub fn ihdr(width: u32, height: u32, bit_depth: u8, colour_type: u8, interlace: u8) -> Vec<u8> {
    let mut d = Vec::with_capacity(13);
    d.extend_from_slice(&width.to_be_bytes());
    d.extend_from_slice(&height.to_be_bytes());
    d.extend_from_slice(&[bit_depth, colour_type, 0, 0, interlace]);
    d
}

/// A structurally valid PNG of exactly `len` bytes (at least 57): IHDR, IDAT chunks of up
/// to 64 KiB of pseudo-random data (the CRCs are right; the compressed stream is not),
/// IEND. Passes the structural validator; a full decode rejects it.
pub fn structural_png(len: usize) -> Vec<u8> {
    const IDAT_MAX: usize = 64 * 1024;
    let mut out = PNG_SIGNATURE.to_vec();
    png_chunk(&mut out, b"IHDR", &ihdr(1024, 768, 8, 2, 0));
    // Signature and IHDR take 33 bytes, IEND 12, each IDAT 12 plus its data.
    let room = len.saturating_sub(out.len() + 12);
    let chunks = room.div_ceil(IDAT_MAX + 12).max(1);
    let payload = noise(room.saturating_sub(12 * chunks), 7);
    let per = payload.len().div_ceil(chunks).max(1);
    let mut parts: Vec<&[u8]> = payload.chunks(per).collect();
    parts.resize(chunks, &[]);
    for part in parts {
        png_chunk(&mut out, b"IDAT", part);
    }
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A structurally valid baseline JPEG of at least `len` bytes: SOI, APP0, DQT, SOF0, DHT,
/// SOS, pseudo-random entropy-coded data (0xFF stuffed as 0xFF00), EOI.
pub fn structural_jpeg(len: usize) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    out.extend_from_slice(b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00");
    out.extend_from_slice(b"\xff\xdb\x00\x43\x00");
    out.extend_from_slice(&[1u8; 64]);
    out.extend_from_slice(
        b"\xff\xc0\x00\x11\x08\x03\x00\x04\x00\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01",
    );
    out.extend_from_slice(b"\xff\xc4\x00\x1f\x00\x00\x01\x05\x01\x01\x01\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b");
    out.extend_from_slice(b"\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00");
    for b in noise(len.saturating_sub(out.len() + 2), 11) {
        out.push(b);
        if b == 0xFF {
            out.push(0x00);
        }
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// A structurally valid baseline JPEG of exactly `len` bytes (at least 150): as
/// [`structural_jpeg`], with no 0xFF in the entropy-coded data so nothing is stuffed.
pub fn exact_jpeg(len: usize) -> Vec<u8> {
    let mut out = structural_jpeg(0);
    out.truncate(out.len() - 2);
    assert!(
        len >= out.len() + 2,
        "a JPEG needs at least {} bytes",
        out.len() + 2
    );
    out.extend(
        noise(len - out.len() - 2, 13)
            .into_iter()
            .map(|b| b.min(0xFE)),
    );
    out.extend_from_slice(&[0xFF, 0xD9]);
    assert_eq!(out.len(), len);
    out
}

/// Pixel data for a `width` x `height` image with `bytes_per_row` bytes per row: a smooth
/// pattern, so encoders compress it like a photo rather than like noise.
pub fn pattern(bytes_per_row: usize, height: usize) -> Vec<u8> {
    (0..height)
        .flat_map(|y| (0..bytes_per_row).map(move |x| ((x * 7 + y * 13) ^ (x * y)) as u8))
        .collect()
}

/// A real PNG made by the `png` crate.
pub fn real_png(width: u32, height: u32, colour: png::ColorType, depth: png::BitDepth) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(colour);
    enc.set_depth(depth);
    let bits = depth as usize * colour.samples();
    if colour == png::ColorType::Indexed {
        let entries = 1usize << (depth as usize).min(8);
        enc.set_palette(
            (0..entries * 3)
                .map(|i| (i * 37) as u8)
                .collect::<Vec<u8>>(),
        );
    }
    let mut writer = enc.write_header().expect("valid header");
    let row = (width as usize * bits).div_ceil(8);
    // Every value indexes an entry: the palette has 2^depth of them.
    let data = pattern(row, height as usize);
    writer.write_image_data(&data).expect("valid data");
    writer.finish().expect("valid image");
    out
}

/// Every valid (colour type, bit depth) pair of PNG.
pub fn png_formats() -> Vec<(png::ColorType, png::BitDepth)> {
    use png::BitDepth::*;
    use png::ColorType::*;
    vec![
        (Grayscale, One),
        (Grayscale, Two),
        (Grayscale, Four),
        (Grayscale, Eight),
        (Grayscale, Sixteen),
        (Rgb, Eight),
        (Rgb, Sixteen),
        (Indexed, One),
        (Indexed, Two),
        (Indexed, Four),
        (Indexed, Eight),
        (GrayscaleAlpha, Eight),
        (GrayscaleAlpha, Sixteen),
        (Rgba, Eight),
        (Rgba, Sixteen),
    ]
}

/// An APNG of two frames made by the `png` crate.
pub fn real_apng(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_animated(2, 0).expect("two frames");
    let mut writer = enc.write_header().expect("valid header");
    let row = width as usize * 3;
    writer
        .write_image_data(&pattern(row, height as usize))
        .expect("frame 1");
    let mut second = pattern(row, height as usize);
    second.iter_mut().for_each(|b| *b = b.wrapping_add(99));
    writer.write_image_data(&second).expect("frame 2");
    writer.finish().expect("valid image");
    out
}

/// zlib stream of `data` in stored (uncompressed) blocks.
pub fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let mut blocks = data.chunks(65_535).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF]);
    }
    while let Some(block) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

/// An Adam7-interlaced 8-bit RGB PNG, made by hand: each pass's rows with filter type 0,
/// in one zlib stream of stored blocks. Returns the file and the pixels it encodes.
pub fn interlaced_png(width: u32, height: u32) -> (Vec<u8>, Vec<u8>) {
    const PASSES: [(usize, usize, usize, usize); 7] = [
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ];
    let (w, h) = (width as usize, height as usize);
    let pixels = pattern(w * 3, h);
    let mut raw = Vec::new();
    for (x0, y0, dx, dy) in PASSES {
        let cols: Vec<usize> = (x0..w).step_by(dx).collect();
        if cols.is_empty() {
            continue;
        }
        for y in (y0..h).step_by(dy) {
            raw.push(0);
            for &x in &cols {
                raw.extend_from_slice(&pixels[(y * w + x) * 3..(y * w + x) * 3 + 3]);
            }
        }
    }
    let mut out = PNG_SIGNATURE.to_vec();
    png_chunk(&mut out, b"IHDR", &ihdr(width, height, 8, 2, 1));
    png_chunk(&mut out, b"IDAT", &zlib_stored(&raw));
    png_chunk(&mut out, b"IEND", &[]);
    (out, pixels)
}

/// The chunks of a PNG: (offset of the length field, type, data length).
pub fn png_chunks(file: &[u8]) -> Vec<(usize, [u8; 4], usize)> {
    let mut chunks = Vec::new();
    let mut at = 8;
    while at + 12 <= file.len() {
        let len = u32::from_be_bytes(file[at..at + 4].try_into().unwrap()) as usize;
        let ty: [u8; 4] = file[at + 4..at + 8].try_into().unwrap();
        chunks.push((at, ty, len));
        at += 12 + len;
    }
    chunks
}

/// A real JPEG made by `jpeg-encoder`.
pub fn real_jpeg(
    width: u16,
    height: u16,
    colour: jpeg_encoder::ColorType,
    progressive: bool,
    restart: u16,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, 85);
    enc.set_progressive(progressive);
    if restart > 0 {
        enc.set_restart_interval(restart);
    }
    let channels = match colour {
        jpeg_encoder::ColorType::Luma => 1,
        jpeg_encoder::ColorType::Rgb => 3,
        _ => 4,
    };
    let data = pattern(usize::from(width) * channels, usize::from(height));
    enc.encode(&data, width, height, colour)
        .expect("valid image");
    out
}

/// A baseline RGB JPEG made by the `image` crate's own encoder.
pub fn image_crate_jpeg(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 3) as u8, (y * 5) as u8, (x ^ y) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encodes");
    out.into_inner()
}

/// The marker segments of a JPEG up to the first SOS: (offset of 0xFF, marker code,
/// segment length field).
pub fn jpeg_segments(file: &[u8]) -> Vec<(usize, u8, usize)> {
    let mut segs = Vec::new();
    let mut at = 2;
    while at + 4 <= file.len() && file[at] == 0xFF {
        let code = file[at + 1];
        let len = usize::from(u16::from_be_bytes([file[at + 2], file[at + 3]]));
        segs.push((at, code, len));
        if code == 0xDA {
            break;
        }
        at += 2 + len;
    }
    segs
}

/// A big-endian TIFF/EXIF block with Make, Orientation and a GPS IFD (latitude and
/// longitude), as a phone camera writes.
pub fn exif_with_gps(orientation: u16) -> Vec<u8> {
    fn entry(t: &mut Vec<u8>, tag: u16, ty: u16, count: u32, value: [u8; 4]) {
        t.extend_from_slice(&tag.to_be_bytes());
        t.extend_from_slice(&ty.to_be_bytes());
        t.extend_from_slice(&count.to_be_bytes());
        t.extend_from_slice(&value);
    }
    let ifd0 = 8u32;
    let ifd0_len = 2 + 3 * 12 + 4;
    let make_at = ifd0 + ifd0_len;
    let gps = make_at + 6;
    let gps_len = 2 + 4 * 12 + 4;
    let lat_at = gps + gps_len;
    let lon_at = lat_at + 24;
    let mut t = b"MM\0*".to_vec();
    t.extend_from_slice(&ifd0.to_be_bytes());
    t.extend_from_slice(&3u16.to_be_bytes());
    entry(&mut t, 0x010F, 2, 6, make_at.to_be_bytes());
    let o = orientation.to_be_bytes();
    entry(&mut t, 0x0112, 3, 1, [o[0], o[1], 0, 0]);
    entry(&mut t, 0x8825, 4, 1, gps.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(b"Phone\0");
    t.extend_from_slice(&4u16.to_be_bytes());
    entry(&mut t, 0x0001, 2, 2, *b"N\0\0\0");
    entry(&mut t, 0x0002, 5, 3, lat_at.to_be_bytes());
    entry(&mut t, 0x0003, 2, 2, *b"E\0\0\0");
    entry(&mut t, 0x0004, 5, 3, lon_at.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    for (deg, min, sec) in [(52u32, 22u32, 1234u32), (4, 53, 4321)] {
        for (num, den) in [(deg, 1u32), (min, 1), (sec, 100)] {
            t.extend_from_slice(&num.to_be_bytes());
            t.extend_from_slice(&den.to_be_bytes());
        }
    }
    t
}

/// A small stand-in ICC profile: a 128-byte header with the right size and signature and
/// an empty tag table.
pub fn icc_profile() -> Vec<u8> {
    let mut p = vec![0u8; 132];
    p[..4].copy_from_slice(&132u32.to_be_bytes());
    p[12..16].copy_from_slice(b"mntr");
    p[16..20].copy_from_slice(b"RGB ");
    p[20..24].copy_from_slice(b"XYZ ");
    p[36..40].copy_from_slice(b"acsp");
    p
}

/// Runs `exiftool -j -a -G1 -n` on `file` and returns its JSON object.
pub fn exiftool(file: &[u8], suffix: &str) -> serde_json::Map<String, serde_json::Value> {
    let dir = std::env::temp_dir().join(format!("attachments-exiftool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}{suffix}", file.len()));
    std::fs::write(&path, file).unwrap();
    let output = std::process::Command::new("exiftool")
        .args(["-j", "-a", "-G1", "-n"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run exiftool ({e}): install Debian's libimage-exiftool-perl (.ci/test does)"
            )
        });
    let _ = std::fs::remove_file(&path);
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("exiftool prints JSON");
    json[0].as_object().expect("one object per file").clone()
}

/// A small but complete PDF 1.4 (catalog, page tree, one page with a text stream, a font,
/// an exact cross-reference table and trailer), as a PDF writer makes one.
pub fn real_pdf(text: &str) -> Vec<u8> {
    let content = format!("BT /F1 18 Tf 72 720 Td ({text}) Tj ET\n");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
         /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_owned(),
        format!(
            "<< /Length {} >>\nstream\n{content}endstream",
            content.len()
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// An `attachments serve` process, killed when dropped, and the base URL it printed.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub url: String,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `attachments serve --addr 127.0.0.1:0` with `args` and `env`, and reads the
/// base URL from the first line it prints.
pub fn spawn_serve(args: &[&str], env: &[(String, String)]) -> ServeProcess {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_attachments"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().cloned())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("attachments serve");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the first line");
    let url = line.trim().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "first line: {line:?}");
    ServeProcess { child, url }
}

/// Serves `router` on 127.0.0.1 (any free port) in the background; returns its base URL.
pub async fn serve_local(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let app = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}
