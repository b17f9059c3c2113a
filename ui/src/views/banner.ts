// The error banner: message, machine code, details, dismiss, and one action chosen
// from `error.action` (never from the text).

import type { Ctx } from "../context";
import { h } from "../dom";
import { api, type AppError, type AppState, type ErrorAction } from "../ipc";

interface Action {
  label: string;
  testid: string;
  run: (ctx: Ctx) => void;
}

function rejoin(ctx: Ctx): void {
  void api.rejoin().then((r) => {
    if (r.status === "error") ctx.reportError(r.error);
  });
}

/** The action button for an error action; `null` for none. */
export function bannerAction(action: ErrorAction): Action | null {
  switch (action) {
    case "rejoin":
    case "retry_later":
      return { label: "Rejoin", testid: "rejoin", run: rejoin };
    case "sign_in":
      return { label: "Sign in", testid: "banner-sign-in", run: (ctx) => ctx.navigate("signin") };
    case "pick_device":
      return {
        label: "Audio settings",
        testid: "banner-settings",
        run: (ctx) => ctx.navigate("settings"),
      };
    default:
      return null;
  }
}

function errorKey(e: AppError): string {
  return JSON.stringify([e.code, e.message, e.action, e.detail]);
}

export class Banner {
  readonly el: HTMLElement;
  private key: string | null = null;
  /** Dismissed optimistically; stays hidden until the core clears or changes the error. */
  private dismissed: string | null = null;

  constructor(private readonly ctx: Ctx) {
    this.el = h("div", { class: "banner", role: "alert", "data-testid": "banner", hidden: true });
  }

  update(state: AppState): void {
    const error = state.error;
    if (!error) {
      this.dismissed = null;
      this.clear();
      return;
    }
    const key = errorKey(error);
    if (key === this.dismissed) return;
    if (key === this.key) return; // unchanged: keep the details' open state
    this.key = key;
    this.render(error);
  }

  private clear(): void {
    this.key = null;
    this.el.hidden = true;
    this.el.replaceChildren();
  }

  private render(error: AppError): void {
    const action = bannerAction(error.action);
    const details = error.detail
      ? h(
          "details",
          { class: "banner-details" },
          h("summary", null, "Details"),
          h("pre", { class: "mono", "data-testid": "banner-detail" }, error.detail),
        )
      : null;
    const dismiss = h(
      "button",
      {
        type: "button",
        class: "icon-button banner-dismiss",
        "aria-label": "Dismiss",
        title: "Dismiss",
        "data-testid": "banner-dismiss",
        onclick: () => this.dismiss(),
      },
      "×",
    );
    const actionButton = action
      ? h(
          "button",
          {
            type: "button",
            class: "button primary",
            "data-testid": action.testid,
            onclick: () => action.run(this.ctx),
          },
          action.label,
        )
      : null;
    this.el.replaceChildren(
      h(
        "div",
        { class: "banner-body" },
        h("p", { class: "banner-message", "data-testid": "banner-message" }, error.message),
        h("code", { class: "banner-code mono", "data-testid": "banner-code" }, error.code),
        details,
      ),
      h("div", { class: "banner-actions" }, actionButton, dismiss),
    );
    this.el.hidden = false;
  }

  private dismiss(): void {
    this.dismissed = this.key;
    this.clear();
    void api.dismissError().then((r) => {
      if (r.status === "error") this.ctx.reportError(r.error);
    });
  }
}
