// The channel's recent transmissions: who, when, how long, unplayed marked; play and stop.

import { h, setAttr, setText, syncList } from "../dom";
import { api, type AppState, type ErrorBody, type HistoryEntry } from "../ipc";

/** `14:03`, local time. */
export function formatTime(atMs: number): string {
  const d = new Date(atMs);
  const p = (n: number) => String(n).padStart(2, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** `4 s`, `1 min 5 s`. */
export function formatLength(ms: number): string {
  const s = Math.max(1, Math.round(ms / 1000));
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

/** When the list must be asked for again: another channel, a reconnect, a talk ended. */
export function historyKey(state: AppState): string | null {
  if (state.channel === null || !state.signed_in) return null;
  const up = state.status.status === "Connected" || state.status.status === "Degraded";
  return `${state.channel}|${up}|${state.talker?.user ?? ""}`;
}

export class HistoryPanel {
  readonly el: HTMLElement;
  private readonly list: HTMLUListElement;
  private readonly empty: HTMLElement;
  private readonly error: HTMLElement;
  private key: string | null = null;
  private channel: string | null = null;
  private entries: HistoryEntry[] = [];
  /** The entry playing, and when it will have finished. */
  private playing: { id: string; until: number } | null = null;

  constructor(
    private readonly report: (e: ErrorBody) => void,
    private readonly now: () => number = () => Date.now(),
  ) {
    this.list = h("ul", {
      class: "history-list",
      "data-testid": "history",
      "aria-labelledby": "history-heading",
    });
    this.empty = h("p", { class: "muted", "data-testid": "history-empty" }, "Nothing said yet.");
    this.error = h("p", { class: "inline-error", role: "alert", hidden: true });
    this.el = h(
      "section",
      { class: "panel", "aria-labelledby": "history-heading" },
      h("div", { class: "panel-head" }, h("h2", { id: "history-heading" }, "Recent")),
      this.list,
      this.empty,
      this.error,
    );
  }

  update(state: AppState): void {
    const key = historyKey(state);
    if (key === this.key) return;
    this.key = key;
    this.channel = state.channel;
    if (key === null || !key.includes("|true|")) {
      if (key === null) this.paint([]);
      return;
    }
    void this.refresh();
  }

  /** Asks for the current channel's list again. */
  async refresh(): Promise<void> {
    const channel = this.channel;
    if (channel === null) return;
    const r = await api.channelHistory(channel);
    if (channel !== this.channel) return;
    if (r.status === "error") {
      this.error.textContent = `History unavailable: ${r.error.message}`;
      this.error.hidden = false;
      return;
    }
    this.error.hidden = true;
    this.paint(Array.isArray(r.data) ? r.data : []);
  }

  /** The once-a-second tick: a finished playback turns its button back to Play. */
  tick(): void {
    if (this.playing && this.now() >= this.playing.until) {
      this.playing = null;
      this.paint(this.entries);
    }
  }

  private paint(entries: HistoryEntry[]): void {
    this.entries = entries;
    syncList<HistoryEntry, HTMLLIElement>(
      this.list,
      entries,
      (e) => e.id,
      (e) => {
        const button = h("button", {
          type: "button",
          class: "button subtle small",
          "data-testid": `history-play-${e.id}`,
          onclick: () => this.toggle(e.id),
        });
        return h(
          "li",
          { class: "history-item", "data-id": e.id, "data-testid": `history-item-${e.id}` },
          h("span", { class: "unplayed-dot", "aria-hidden": "true" }),
          h("span", { class: "history-text" }),
          button,
        );
      },
      (li, e) => {
        const when = formatTime(e.start_ms);
        const length = formatLength(e.duration_ms);
        const playing = this.playing?.id === e.id;
        li.classList.toggle("unplayed", e.unplayed);
        setAttr(li, "data-unplayed", e.unplayed ? "true" : "false");
        setText(
          li.querySelector(".history-text")!,
          `${e.by} · ${when} · ${e.live ? "talking now" : length}${e.unplayed ? " · new" : ""}`,
        );
        const button = li.querySelector("button")!;
        setText(button, playing ? "Stop" : "Play");
        button.disabled = e.live;
        setAttr(
          button,
          "aria-label",
          `${playing ? "Stop" : "Play"} ${e.by} at ${when}, ${length}${e.unplayed ? ", unplayed" : ""}`,
        );
      },
    );
    this.list.hidden = entries.length === 0;
    this.empty.hidden = entries.length > 0;
  }

  private toggle(id: string): void {
    if (this.playing?.id === id) {
      this.playing = null;
      void api.stopPlayback();
      this.paint(this.entries);
      return;
    }
    const entry = this.entries.find((e) => e.id === id);
    if (!entry) return;
    this.playing = { id, until: this.now() + entry.duration_ms + 500 };
    this.paint(this.entries);
    void api.playTransmission(id).then((r) => {
      if (r.status === "error") {
        this.playing = null;
        this.report(r.error);
        this.paint(this.entries);
        return;
      }
      // Played: no longer new.
      this.entries = this.entries.map((e) => (e.id === id ? { ...e, unplayed: false } : e));
      this.paint(this.entries);
    });
  }
}
