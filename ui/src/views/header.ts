// App name, status dot + text, and the navigation.

import type { Ctx, Route } from "../context";
import { h, setAttr, setText } from "../dom";
import type { AppState } from "../ipc";
import { statusView } from "../status";

const NAV: { route: Route; label: string; testid: string }[] = [
  { route: "main", label: "Talk", testid: "nav-main" },
  { route: "settings", label: "Settings", testid: "nav-settings" },
  { route: "diagnostics", label: "Diagnostics", testid: "nav-diagnostics" },
  { route: "signin", label: "Sign in", testid: "nav-signin" },
];

export class Header {
  readonly el: HTMLElement;
  private readonly dot: HTMLElement;
  private readonly text: HTMLElement;
  private readonly textMain: HTMLElement;
  private readonly textTail: HTMLElement;
  private readonly navButtons = new Map<Route, HTMLButtonElement>();
  private state: AppState | null = null;

  constructor(private readonly ctx: Ctx) {
    this.dot = h("span", {
      class: "dot",
      "data-testid": "status-dot",
      "data-color": "grey",
      "aria-hidden": "true",
    });
    // Only the part without the ticking countdown is live, so a screen reader hears
    // "Reconnecting (2/5)" once, not every second.
    this.textMain = h("span", { class: "status-main", "aria-live": "polite" }, "Starting…");
    this.textTail = h("span", { class: "status-tail" });
    this.text = h(
      "span",
      { class: "status-text", "data-testid": "status-text" },
      this.textMain,
      this.textTail,
    );
    const nav = h("nav", { class: "tabs", "aria-label": "Views" });
    for (const item of NAV) {
      const b = h(
        "button",
        {
          type: "button",
          class: `tab tab-${item.route}`,
          "data-testid": item.testid,
          onclick: () => ctx.navigate(item.route),
        },
        item.label,
      );
      this.navButtons.set(item.route, b);
      nav.append(b);
    }
    this.el = h(
      "header",
      { class: "app-header" },
      h(
        "div",
        { class: "header-row" },
        h("h1", { class: "app-name" }, "Roger"),
        h("div", { class: "status", title: "Connection" }, this.dot, this.text),
      ),
      nav,
    );
  }

  update(state: AppState): void {
    this.state = state;
    this.paintStatus();
    const signIn = this.navButtons.get("signin");
    if (signIn) setText(signIn, state.signed_in ? "Account" : "Sign in");
  }

  /** Marks the current tab (`route` is what the user picked). */
  setRoute(route: Route): void {
    for (const [r, b] of this.navButtons) setAttr(b, "aria-current", r === route ? "page" : null);
  }

  tick(): void {
    this.paintStatus();
  }

  private paintStatus(): void {
    const state = this.state;
    if (!state) return;
    const view = statusView(state.presentation, this.ctx.now());
    setAttr(this.dot, "data-color", view.color);
    const tail = view.text.startsWith(view.announce) ? view.text.slice(view.announce.length) : "";
    setText(this.textMain, tail ? view.announce : view.text);
    setText(this.textTail, tail);
    setAttr(this.text, "title", view.text);
  }
}
