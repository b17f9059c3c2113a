// One-line notices that hide themselves.

import { h } from "../dom";

export class Toast {
  readonly el: HTMLElement;
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly ms = 4000) {
    // Always in the document (an empty live region), so a new message is announced.
    this.el = h("div", {
      class: "toast",
      role: "status",
      "aria-live": "polite",
      "aria-atomic": "true",
      "data-testid": "toast",
      "data-visible": "false",
    });
  }

  show(text: string): void {
    if (!text) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.el.textContent = text;
    this.el.dataset.visible = "true";
    this.timer = setTimeout(() => this.hide(), this.ms);
  }

  hide(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.el.dataset.visible = "false";
    this.el.textContent = "";
  }

  dispose(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}
