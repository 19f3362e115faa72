// Forms whose refusals land next to the field the server names (BadRequest field violations),
// or above the form when no field of it is named. A form sends one call, once: its button is
// disabled while the call is out, and its values stay as typed when it is refused.

import { refusal, type Refusal } from "./api";
import { h, replace, type Child } from "./dom";
import { baseField, FIELD_LABELS, stripFieldPrefix, withLabel } from "./errors";

/** The product's error code, apart from the message (a badge, not glued to the text). */
export function reasonBadge(reason: string): HTMLElement | null {
  return reason ? h("code", { class: "reason", title: "Error code", "data-reason": reason }, reason) : null;
}

/** A refusal in a box: the message (API field names replaced by `labels`), then its code. */
export function refusalView(found: Refusal, labels: ReadonlyMap<string, string> = FIELD_LABELS): Child[] {
  return [h("span", { class: "message" }, withLabel(found.message, labels)), " ", reasonBadge(found.reason || found.code)];
}

let fields = 0;

export class Form {
  readonly element: HTMLFormElement;
  private readonly banner = h("div", { class: "form-error hidden", role: "alert" });
  private readonly slots = new Map<string, HTMLElement>();
  private readonly labels = new Map<string, string>();
  private busy = false;

  constructor(onSubmit: (form: Form) => Promise<void>, cls = "") {
    this.element = h("form", { class: `form ${cls}`, novalidate: true });
    this.element.appendChild(this.banner);
    this.element.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.run(() => onSubmit(this));
    });
  }

  /** A labelled control with a place for the server's word on `apiField`. A single control
   * is labelled by a <label>; a composite one (rows of inputs, a table) is a named group. */
  field(apiField: string, label: string, control: Child, hint?: Child): HTMLElement {
    const id = `field-${++fields}`;
    const error = h("div", { class: "field-error", id: `${id}-error`, "data-field-error": apiField, role: "alert" });
    this.slots.set(apiField, error);
    if (label) this.labels.set(apiField, label);
    const single = control instanceof HTMLInputElement || control instanceof HTMLSelectElement || control instanceof HTMLTextAreaElement;
    if (single) {
      const described = [control.getAttribute("aria-describedby"), error.id].filter(Boolean).join(" ");
      control.setAttribute("aria-describedby", described);
    }
    return h(
      "div",
      { class: "field", "data-field": apiField },
      single
        ? h("label", {}, h("span", { class: "label" }, label), control)
        : label
          ? h("div", { class: "group", role: "group", "aria-labelledby": `${id}-label` }, h("span", { class: "label", id: `${id}-label` }, label), control)
          : h("div", { class: "group" }, control),
      hint ? h("div", { class: "hint" }, hint) : null,
      error,
    );
  }

  add(...children: Child[]): this {
    for (const child of children) if (child) this.element.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    return this;
  }

  clearErrors(): void {
    this.banner.classList.add("hidden");
    replace(this.banner);
    for (const slot of this.slots.values()) {
      replace(slot);
      slot.parentElement?.classList.remove("invalid");
    }
  }

  /** The server's word on each field it names, under that field (without the API's field
   * name, which the label above says better); what no field of this form holds, above it. */
  show(found: Refusal): void {
    const placed = new Set<string>();
    for (const [field, description] of found.fields) {
      const slot = this.slots.get(field) ?? this.slots.get(baseField(field));
      if (!slot) continue;
      replace(slot, h("span", { class: "message" }, stripFieldPrefix(description, field)), " ", reasonBadge(found.reason));
      slot.parentElement?.classList.add("invalid");
      placed.add(field);
    }
    if (placed.size < found.fields.size || found.fields.size === 0) {
      replace(this.banner, ...refusalView(found, new Map([...FIELD_LABELS, ...this.labels])));
      this.banner.classList.remove("hidden");
    }
  }

  async run(action: () => Promise<void>): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    const buttons = [...this.element.querySelectorAll("button")];
    for (const button of buttons) button.disabled = true;
    this.clearErrors();
    try {
      await action();
    } catch (error) {
      this.show(refusal(error));
    } finally {
      this.busy = false;
      for (const button of buttons) button.disabled = false;
    }
  }
}

export function input(attrs: Record<string, string | boolean | number | undefined | EventListener> = {}): HTMLInputElement {
  return h("input", { type: "text", ...attrs });
}

export function select(options: [string, string][], value = "", attrs: Record<string, string | EventListener> = {}): HTMLSelectElement {
  const element = h("select", attrs, ...options.map(([v, label]) => h("option", { value: v }, label)));
  element.value = value;
  return element;
}

/** An error (or notice) box for a page, for refusals of calls that are not forms. */
export function errorBox(error: unknown): HTMLElement {
  return h("div", { class: "form-error", role: "alert" }, ...refusalView(refusal(error)));
}
