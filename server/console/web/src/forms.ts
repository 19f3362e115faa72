// Forms whose refusals land next to the field the server names (BadRequest field violations),
// or above the form when no field of it is named. A form sends one call, once: its button is
// disabled while the call is out, and its values stay as typed when it is refused.

import { refusal, type Refusal } from "./api";
import { h, replace, type Child } from "./dom";

export class Form {
  readonly element: HTMLFormElement;
  private readonly banner = h("div", { class: "form-error hidden", role: "alert" });
  private readonly slots = new Map<string, HTMLElement>();
  private busy = false;

  constructor(onSubmit: (form: Form) => Promise<void>, cls = "") {
    this.element = h("form", { class: `form ${cls}`, novalidate: true });
    this.element.appendChild(this.banner);
    this.element.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.run(() => onSubmit(this));
    });
  }

  /** A labelled control with a place for the server's word on `apiField`. */
  field(apiField: string, label: string, control: Child, hint?: Child): HTMLElement {
    const error = h("div", { class: "field-error", "data-field-error": apiField, role: "alert" });
    this.slots.set(apiField, error);
    return h(
      "div",
      { class: "field", "data-field": apiField },
      h("label", {}, h("span", { class: "label" }, label), control),
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

  show(found: Refusal): void {
    const placed = new Set<string>();
    for (const [field, description] of found.fields) {
      const slot = this.slots.get(field) ?? this.slots.get(field.split(/[.[]/)[0] ?? "");
      if (!slot) continue;
      replace(slot, description, found.reason ? h("span", { class: "reason" }, found.reason) : null);
      slot.parentElement?.classList.add("invalid");
      placed.add(field);
    }
    if (placed.size < found.fields.size || found.fields.size === 0) {
      replace(this.banner, h("strong", {}, found.reason || found.code), " ", found.message);
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
  const found = refusal(error);
  return h("div", { class: "form-error", role: "alert" }, h("strong", {}, found.reason || found.code), " ", found.message);
}
