// The only way this console puts anything on the page: elements built one by one, text set
// with textContent. There is no innerHTML anywhere, so whatever a script prints, or a name
// holds, is shown as text and never parsed as HTML.

export type Child = Node | string | null | undefined | false;
type Attrs = Record<string, string | boolean | number | undefined | EventListener>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") {
      element.addEventListener(name.replace(/^on/, ""), value);
    } else if (name === "class") {
      element.className = String(value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, ...children);
  return element;
}

export function append(parent: Node, ...children: (Child | Child[])[]): void {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
  }
}

export function clear(element: Element): void {
  element.replaceChildren();
}

export function replace(element: Element, ...children: (Child | Child[])[]): void {
  clear(element);
  append(element, ...children);
}

let dialogs = 0;

/** What a control is, to find it again once drawn anew: its tag, data-* attributes, link,
 * label and text, and those of its table row. */
function identity(element: Element): string {
  const attrs = (e: Element): string =>
    [...e.attributes]
      .filter((a) => a.name.startsWith("data-") || a.name === "href" || a.name === "aria-label")
      .map((a) => `${a.name}=${a.value}`)
      .join(" ");
  const row = element.closest("tr");
  return [element.tagName, attrs(element), row ? attrs(row) : "", element.textContent ?? ""].join("|");
}

/** replace(), for content a page redraws by itself (a list it refreshes): the control that had
 * the keyboard focus has it again in the new content, so refreshing never drops the user's
 * place. */
export function redraw(element: Element, ...children: (Child | Child[])[]): void {
  const active = document.activeElement;
  const key = active && active !== document.body && element.contains(active) ? identity(active) : undefined;
  replace(element, ...children);
  if (key === undefined || !active) return;
  for (const candidate of element.querySelectorAll<HTMLElement>(active.tagName)) {
    if (identity(candidate) === key) {
      candidate.focus({ preventScroll: true });
      return;
    }
  }
}

/** A modal <dialog>; resolves with what the content's buttons close it with. */
export function openDialog(
  title: string,
  build: (close: (value: string) => void) => Child[],
  wide = false,
): Promise<string> {
  return new Promise((resolve) => {
    const titleId = `dialog-title-${++dialogs}`;
    const dialog = h("dialog", { class: wide ? "wide" : "", "aria-labelledby": titleId });
    const close = (value: string): void => {
      dialog.close(value);
    };
    append(
      dialog,
      h("header", {}, h("h2", { id: titleId }, title), h("button", { class: "icon", type: "button", title: "Close", "aria-label": "Close", onclick: () => close("") }, "×")),
      h("div", { class: "dialog-body" }, ...build(close)),
    );
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue);
    });
    document.body.appendChild(dialog);
    dialog.showModal();
  });
}

export function confirmDialog(title: string, text: string, action: string): Promise<boolean> {
  return openDialog(title, (close) => [
    h("p", {}, text),
    h(
      "div",
      { class: "actions" },
      h("button", { type: "button", onclick: () => close("") }, "Cancel"),
      h("button", { type: "button", class: "danger", "data-test": "confirm", onclick: () => close("ok") }, action),
    ),
  ]).then((value) => value === "ok");
}

/** Builds a file download from bytes in memory (no URL carries them anywhere). */
export function download(name: string, data: Uint8Array<ArrayBuffer>, type = "application/octet-stream"): void {
  const url = URL.createObjectURL(new Blob([data], { type }));
  const link = h("a", { href: url, download: name, class: "hidden" });
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
