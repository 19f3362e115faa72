// Terminal output as text: SGR colour and bold sequences become CSS classes on text nodes;
// every other escape sequence and control character is dropped. Nothing here is HTML.

const ESCAPE = /\x1b(?:\[([0-9;?]*)([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])|[\x00-\x08\x0b-\x0c\x0e-\x1a\x1c-\x1f\x7f]|\r(?!\n)/g;

export interface Style {
  fg: number | null; // 0-7, 8-15 bright
  bold: boolean;
}

export function plainStyle(): Style {
  return { fg: null, bold: false };
}

function applySgr(style: Style, params: string): void {
  const codes = params === "" ? [0] : params.split(";").map((p) => Number.parseInt(p || "0", 10));
  for (let i = 0; i < codes.length; i++) {
    const code = codes[i] ?? 0;
    if (code === 0) {
      style.fg = null;
      style.bold = false;
    } else if (code === 1) style.bold = true;
    else if (code === 22) style.bold = false;
    else if (code >= 30 && code <= 37) style.fg = code - 30;
    else if (code >= 90 && code <= 97) style.fg = code - 90 + 8;
    else if (code === 39) style.fg = null;
    else if (code === 38 || code === 48) i += codes[i + 1] === 5 ? 2 : 4; // 256/true colour: skipped
  }
}

export interface Segment {
  text: string;
  fg: number | null;
  bold: boolean;
}

/** `text` as runs of printable text with their style, carrying `style` from one chunk to the
 * next (it is updated in place); escape sequences and control characters are gone. */
export function parseAnsi(text: string, style: Style): Segment[] {
  const segments: Segment[] = [];
  let last = 0;
  const emit = (part: string): void => {
    if (part) segments.push({ text: part, fg: style.fg, bold: style.bold });
  };
  for (const match of text.matchAll(ESCAPE)) {
    emit(text.slice(last, match.index));
    if (match[2] === "m") applySgr(style, match[1] ?? "");
    last = (match.index ?? 0) + match[0].length;
  }
  emit(text.slice(last));
  return segments;
}

/** `text` without its escape sequences and control characters. */
export function stripAnsi(text: string): string {
  return parseAnsi(text, plainStyle())
    .map((s) => s.text)
    .join("");
}

/** The CSS classes of a segment's style. */
export function ansiClasses(segment: Segment): string {
  const classes = [];
  if (segment.fg !== null) classes.push(`ansi-fg-${segment.fg}`);
  if (segment.bold) classes.push("ansi-bold");
  return classes.join(" ");
}

/** Appends `text` to `parent` as spans, carrying `style` from one chunk to the next. */
export function appendAnsi(parent: HTMLElement, text: string, style: Style): void {
  for (const segment of parseAnsi(text, style)) {
    const span = document.createElement("span");
    const classes = ansiClasses(segment);
    if (classes) span.className = classes;
    span.textContent = segment.text;
    parent.appendChild(span);
  }
}
