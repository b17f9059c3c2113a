// Sign in (server address + token), and Disconnect or Sign out when signed in. The token
// goes from this form to Rust once; it is never sent back (the app keeps it in the OS
// credential store, and tells this view only where).

import type { Ctx, View } from "../context";
import { h, setText, uid } from "../dom";
import { api, type AppState, type ErrorBody, type Settings } from "../ipc";

export const SERVER_PLACEHOLDER = "ws://127.0.0.1:7070/ws";

export class SignInView implements View {
  readonly el: HTMLElement;
  private readonly url: HTMLInputElement;
  private readonly token: HTMLInputElement;
  private readonly unencrypted: HTMLInputElement;
  private readonly tokenNote: HTMLElement;
  private readonly connect: HTMLButtonElement;
  private readonly error: HTMLElement;
  private readonly account: HTMLElement;
  private readonly accountText: HTMLElement;
  private readonly heading: HTMLElement;
  private dirty = false;
  private busy = false;
  /** A token is saved for the server in the settings: Connect may leave the field empty. */
  private saved = false;

  constructor(private readonly ctx: Ctx) {
    const urlId = uid("server-url");
    const tokenId = uid("token");
    const errorId = uid("signin-error");
    this.url = h("input", {
      id: urlId,
      // Text, not "url": a cluster's several node addresses go here, separated by commas.
      type: "text",
      inputmode: "url",
      class: "input",
      "data-testid": "server-url",
      placeholder: SERVER_PLACEHOLDER,
      autocomplete: "url",
      spellcheck: "false",
      autocapitalize: "off",
      required: true,
      "aria-describedby": errorId,
    });
    this.token = h("input", {
      id: tokenId,
      type: "password",
      class: "input mono",
      "data-testid": "token",
      autocomplete: "off",
      spellcheck: "false",
      autocapitalize: "off",
      required: true,
      "aria-describedby": errorId,
    });
    const unencryptedId = uid("allow-unencrypted");
    this.unencrypted = h("input", {
      id: unencryptedId,
      type: "checkbox",
      "data-testid": "allow-unencrypted",
    });
    this.tokenNote = h("p", { class: "muted", "data-testid": "token-store", hidden: true });
    for (const input of [this.url, this.token, this.unencrypted]) {
      input.addEventListener("input", () => {
        this.dirty = true;
      });
    }
    this.connect = h(
      "button",
      { type: "submit", class: "button primary", "data-testid": "connect" },
      "Connect",
    );
    this.error = h("div", {
      id: errorId,
      class: "inline-error",
      role: "alert",
      "data-testid": "signin-error",
      hidden: true,
    });
    this.heading = h("h2", null, "Sign in");
    const form = h(
      "form",
      { class: "form", novalidate: true, "aria-label": "Sign in" },
      this.heading,
      h("p", { class: "muted" }, "Connect to your team's Roger server with the token you were given."),
      h(
        "div",
        { class: "field" },
        h("label", { for: urlId }, "Server address"),
        this.url,
        h("p", { class: "muted" }, "For a cluster, list its nodes separated by commas."),
      ),
      h(
        "div",
        { class: "field" },
        h("label", { for: tokenId }, "Token"),
        this.token,
        this.tokenNote,
      ),
      h(
        "div",
        { class: "check unencrypted" },
        this.unencrypted,
        h(
          "label",
          { for: unencryptedId },
          "Allow an unencrypted connection (ws:// to another machine). ",
          h("strong", null, "Your token and your channel's signaling travel in the clear."),
        ),
      ),
      this.error,
      h("div", { class: "form-actions" }, this.connect),
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      void this.submit();
    });

    this.accountText = h("p", { "data-testid": "account" });
    this.account = h(
      "section",
      { class: "panel account", "aria-label": "Account", hidden: true },
      this.accountText,
      h(
        "div",
        { class: "form-actions" },
        h(
          "button",
          {
            type: "button",
            class: "button",
            "data-testid": "disconnect",
            onclick: () => this.disconnect(),
          },
          "Disconnect",
        ),
        h(
          "button",
          {
            type: "button",
            class: "button",
            "data-testid": "sign-out",
            onclick: () => this.signOut(),
          },
          "Sign out",
        ),
      ),
    );
    this.el = h("section", { class: "view view-signin" }, this.account, form);
  }

  /** Prefills from the saved settings unless the user already typed. */
  prefill(settings: Settings): void {
    if (this.dirty) return;
    this.url.value = settings.server_url;
    this.unencrypted.checked = settings.allow_unencrypted;
  }

  update(state: AppState): void {
    this.account.hidden = !state.signed_in;
    const kept =
      state.token_store === "keyring"
        ? "A saved token is kept in the system keyring."
        : state.token_store === "file"
          ? "A saved token is kept in a file only you can read (no system keyring answered)."
          : "";
    setText(
      this.tokenNote,
      kept ? `${kept} Leave the field empty to use it, or paste a new one; Sign out forgets it.` : "",
    );
    this.tokenNote.hidden = !kept;
    this.saved = state.token_store !== null && state.token_store !== undefined;
    if (state.signed_in) {
      const who = state.user ? ` as ${state.user.name}` : "";
      setText(this.accountText, `Signed in to ${state.server_url}${who}.`);
      setText(this.heading, "Sign in again");
    } else {
      setText(this.heading, "Sign in");
    }
  }

  show(): void {
    const s = this.ctx.settings();
    if (s) this.prefill(s);
  }

  private showError(error: ErrorBody | null, local?: string): void {
    if (!error && !local) {
      this.error.hidden = true;
      this.error.replaceChildren();
      return;
    }
    this.error.replaceChildren(h("span", { class: "inline-error-message" }, error ? error.message : local));
    if (error) this.error.append(" ", h("code", { class: "mono code-chip" }, error.code));
    this.error.hidden = false;
  }

  private async submit(): Promise<void> {
    if (this.busy) return;
    const url = this.url.value.trim();
    const token = this.token.value.trim();
    if (!url) {
      this.showError(null, "Enter the server address, e.g. " + SERVER_PLACEHOLDER);
      this.url.focus();
      return;
    }
    if (!token && !this.saved) {
      this.showError(null, "Paste your token.");
      this.token.focus();
      return;
    }
    this.showError(null);
    this.busy = true;
    this.connect.disabled = true;
    setText(this.connect, "Connecting…");
    const allowUnencrypted = this.unencrypted.checked;
    const r = await api.signIn(url, token, allowUnencrypted);
    this.busy = false;
    this.connect.disabled = false;
    setText(this.connect, "Connect");
    if (r.status === "error") {
      this.showError(r.error);
      return;
    }
    this.dirty = false;
    this.token.value = "";
    const s = this.ctx.settings();
    if (s) this.ctx.setSettings({ ...s, server_url: url, allow_unencrypted: allowUnencrypted });
    this.ctx.navigate("main");
  }

  private signOut(): void {
    void api.signOut().then((r) => {
      if (r.status === "error") this.ctx.reportError(r.error);
    });
  }

  private disconnect(): void {
    void api.disconnect().then((r) => {
      if (r.status === "error") this.ctx.reportError(r.error);
    });
  }
}
