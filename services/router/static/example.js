// How an item is shown to the labeler, from the payload as producers send it.
//
// - `image`: a URL (http, https), a data: URI, bare base64 (PNG, JPEG, GIF, WebP, SVG are
//   recognised by their first bytes), or a matrix of numbers (a 2-D array, or a flat list
//   of a square length) drawn as greyscale; `image_url` and `image_base64` are read too.
// - `features`: drawn as an image when the project declares `review.display: "image WxH"`
//   and the list has W*H numbers; otherwise shown as a compact grid of numbers.
// - `text`: the text itself; every other field is metadata, shown as name: value, with
//   long lists summarised ("list of 300 numbers") rather than dumped.

const IMAGE_KEYS = ["image", "image_url", "image_base64"];
const SHOWN_SIDE = 320; // CSS pixels of the longer side of a drawn matrix
const FEATURES_SHOWN = 64; // numbers shown of a features list with no image display
const INLINE_LIST = 8; // a list this short is shown as it is
const VALUE_CHARS = 240; // a metadata value is cut after this many characters

const BASE64_MAGIC = [
  ["iVBORw0KGgo", "image/png"],
  ["/9j/", "image/jpeg"],
  ["R0lGOD", "image/gif"],
  ["UklGR", "image/webp"],
  ["PHN2Zy", "image/svg+xml"],
  ["PD94bWwg", "image/svg+xml"],
];

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// The src an image string stands for, or null when it is none we show.
export function imageSource(value) {
  if (typeof value !== "string") return null;
  const text = value.trim();
  if (/^data:image\/[a-z0-9.+-]+[;,]/i.test(text)) return text;
  if (/^https?:\/\//i.test(text)) {
    try {
      return new URL(text).href;
    } catch (err) {
      return null;
    }
  }
  const compact = text.replace(/\s+/g, "");
  if (compact.length >= 16 && /^[A-Za-z0-9+/]+={0,2}$/.test(compact)) {
    const found = BASE64_MAGIC.find(([magic]) => compact.startsWith(magic));
    if (found) return `data:${found[1]};base64,${compact}`;
  }
  return null;
}

function isNumbers(list) {
  return Array.isArray(list) && list.length > 0 &&
    list.every((v) => typeof v === "number" && Number.isFinite(v));
}

// A matrix of numbers (rows of equal length), from a 2-D array or a flat list of a
// square length, or of `width` by `height` when they are given.
export function asPixels(image, width, height) {
  if (!Array.isArray(image) || image.length === 0) return null;
  let rows = image;
  if (!Array.isArray(image[0])) {
    if (!isNumbers(image)) return null;
    let w = width;
    let h = height;
    if (!w || !h) {
      w = Math.round(Math.sqrt(image.length));
      h = w;
    }
    if (w * h !== image.length) return null;
    rows = [];
    for (let r = 0; r < h; r += 1) rows.push(image.slice(r * w, (r + 1) * w));
  }
  const w = rows[0].length;
  const ok = w > 0 && rows.every((row) => isNumbers(row) && row.length === w);
  return ok ? rows : null;
}

function drawMatrix(rows, what) {
  const height = rows.length;
  const width = rows[0].length;
  const values = rows.flat();
  let lo = 0;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const span = hi > lo ? hi - lo : 1;
  const canvas = el("canvas", "pixels");
  canvas.width = width;
  canvas.height = height;
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", `${what}, ${width} by ${height} pixels`);
  canvas.style.width = `${width >= height ? SHOWN_SIDE : Math.round((SHOWN_SIDE * width) / height)}px`;
  canvas.style.height = `${height >= width ? SHOWN_SIDE : Math.round((SHOWN_SIDE * height) / width)}px`;
  const ctx = canvas.getContext("2d");
  const pixels = ctx.createImageData(width, height);
  values.forEach((v, i) => {
    const grey = Math.round(255 * (1 - (v - lo) / span)); // ink is dark, as on paper
    pixels.data.set([grey, grey, grey, 255], i * 4);
  });
  ctx.putImageData(pixels, 0, 0);
  return canvas;
}

function imageElement(src) {
  const figure = el("figure", "picture");
  const img = el("img", "photo");
  img.alt = "the item's image";
  img.decoding = "async";
  img.referrerPolicy = "no-referrer";
  img.addEventListener("error", () => {
    figure.replaceChildren(el("p", "error-inline",
      src.startsWith("data:") ? "The item's image could not be decoded."
        : `The item's image could not be loaded from ${src}.`));
  });
  img.src = src;
  figure.append(img);
  return figure;
}

function numbersGrid(values) {
  const shown = values.slice(0, FEATURES_SHOWN);
  const figure = el("figure", "numbers");
  const grid = el("div", "numbers-grid");
  grid.style.setProperty("--columns", String(Math.min(8, shown.length)));
  for (const v of shown) grid.append(el("span", "", Number.isInteger(v) ? String(v) : v.toPrecision(3)));
  const more = values.length - shown.length;
  const caption = el("figcaption", "meta",
    `${values.length} features${more > 0 ? ` (the first ${shown.length} shown)` : ""}`);
  figure.append(grid, caption);
  return figure;
}

// A metadata value in a few words: scalars as they are, lists and objects summarised.
export function describe(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "string") return value.length > VALUE_CHARS ? `${value.slice(0, VALUE_CHARS)}…` : value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (Array.isArray(value)) {
    if (value.length <= INLINE_LIST && value.every((v) => v === null || typeof v !== "object")) {
      return value.map((v) => String(v)).join(", ");
    }
    const kind = isNumbers(value) ? "numbers" : "values";
    return `list of ${value.length} ${kind}`;
  }
  const text = JSON.stringify(value);
  return text.length > VALUE_CHARS ? `${text.slice(0, VALUE_CHARS)}…` : text;
}

function metadata(fields) {
  const list = el("dl", "fields");
  for (const [name, value] of Object.entries(fields)) {
    const row = el("div", "field");
    row.append(el("dt", "", name), el("dd", "", describe(value)));
    list.append(row);
  }
  return list;
}

// Fill `box` with the item: `payload` as the task carries it, `display` the project's
// declaration ({kind: "image", width, height} or null).
export function renderExample(box, payload, display) {
  box.replaceChildren();
  if (payload === null || payload === undefined) {
    box.append(el("p", "muted", "This item has no payload to show."));
    return;
  }
  const fields = typeof payload === "object" && !Array.isArray(payload) ? payload : { value: payload };
  const rest = { ...fields };
  let shown = false;
  for (const key of IMAGE_KEYS) {
    if (shown || !(key in fields)) continue;
    const src = imageSource(fields[key]);
    const pixels = src ? null : asPixels(fields[key]);
    if (src) box.append(imageElement(src));
    else if (pixels) box.append(drawMatrix(pixels, "image"));
    else continue;
    delete rest[key];
    shown = true;
  }
  if (isNumbers(fields.features)) {
    const image = display && display.kind === "image"
      ? asPixels(fields.features, display.width, display.height) : null;
    box.append(image ? drawMatrix(image, "features drawn as an image") : numbersGrid(fields.features));
    delete rest.features;
  }
  if (typeof fields.text === "string") {
    box.append(el("p", "text", fields.text));
    delete rest.text;
  }
  if (Object.keys(rest).length > 0) box.append(metadata(rest));
}
