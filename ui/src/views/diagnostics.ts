// Diagnostics: recovery and audio counters and recent events, refreshed every 2 s while
// shown, with a plain-text report to copy.

import type { Ctx, View } from "../context";
import { h, setText } from "../dom";
import { formatClock, formatMs, formatPercent } from "../format";
import { api, type AppState, type Diagnostics } from "../ipc";
import { statusView } from "../status";

export const DIAGNOSTICS_REFRESH_MS = 2000;
/** How many recovery times are shown. */
const RECOVERIES_SHOWN = 5;

/** The rows shown (and copied), in order. */
export function diagnosticsRows(d: Diagnostics, nowMs: number): [string, string][] {
  const recent = d.recovery.time_to_recover_ms.slice(-RECOVERIES_SHOWN);
  return [
    ["Version", d.version],
    ["Status", statusView(d.presentation, nowMs).text],
    ["Reconnect attempts", String(d.recovery.reconnect_attempts_total)],
    ["Reconnect successes", String(d.recovery.reconnect_successes)],
    ["Reconnect failures", String(d.recovery.reconnect_failures)],
    ["Success rate", formatPercent(d.recovery.reconnect_success_rate ?? 1)],
    [
      `Time to recover (last ${RECOVERIES_SHOWN})`,
      recent.length ? recent.map(formatMs).join(", ") : "none yet",
    ],
    ["ICE restarts", String(d.recovery.ice_restarts)],
    ["Frames sent", String(d.audio.frames_sent)],
    ["Frames received", String(d.audio.frames_received)],
    ["Frames concealed", String(d.audio.frames_concealed)],
    ["Frames recovered (FEC)", String(d.audio.frames_recovered)],
    ["Playout underruns", String(d.underruns)],
    ["Microphone samples dropped", String(d.capture_dropped)],
    ["Output device", d.output_device ?? "none"],
  ];
}

/** Events newest first. */
export function newestFirst(d: Diagnostics): Diagnostics["events"] {
  return [...d.events].sort((a, b) => b.at_ms - a.at_ms);
}

/** The report the Copy button puts on the clipboard. */
export function diagnosticsReport(d: Diagnostics, nowMs: number): string {
  const rows = diagnosticsRows(d, nowMs);
  const width = Math.max(...rows.map(([k]) => k.length));
  const lines = [
    `Roger diagnostics, ${new Date(nowMs).toISOString()}`,
    "",
    ...rows.map(([k, v]) => `${(k + ":").padEnd(width + 2)}${v}`),
    `All recovery times (ms): ${d.recovery.time_to_recover_ms.join(", ") || "none"}`,
    "",
    "Recent events (newest first):",
    ...newestFirst(d).map((e) => `${new Date(e.at_ms).toISOString()}  ${e.text}`),
  ];
  return lines.join("\n") + "\n";
}

export class DiagnosticsView implements View {
  readonly el: HTMLElement;
  private readonly list: HTMLElement;
  private readonly events: HTMLOListElement;
  private readonly copyStatus: HTMLElement;
  private readonly copyButton: HTMLButtonElement;
  private readonly loadError: HTMLElement;
  private timer: ReturnType<typeof setInterval> | null = null;
  private data: Diagnostics | null = null;
  private eventsKey = "";

  constructor(private readonly ctx: Ctx) {
    this.list = h("dl", { class: "kv", "data-testid": "diag-values" });
    this.events = h("ol", {
      class: "events mono",
      "data-testid": "diag-events",
      "aria-label": "Recent events, newest first",
      tabindex: 0,
    });
    this.copyStatus = h("span", { class: "muted small", role: "status", "aria-live": "polite" });
    this.copyButton = h(
      "button",
      {
        type: "button",
        class: "button",
        "data-testid": "diag-copy",
        disabled: true,
        onclick: () => void this.copy(),
      },
      "Copy report",
    );
    this.loadError = h("p", { class: "inline-error", role: "alert", hidden: true });
    this.el = h(
      "section",
      { class: "view view-diagnostics", "aria-labelledby": "diag-heading" },
      h(
        "div",
        { class: "panel-head" },
        h("h2", { id: "diag-heading" }, "Diagnostics"),
        h("div", { class: "row" }, this.copyStatus, this.copyButton),
      ),
      this.loadError,
      this.list,
      h("h3", null, "Recent events"),
      this.events,
    );
  }

  update(_state: AppState): void {
    // Diagnostics come from their own command, refreshed by the timer.
  }

  show(): void {
    void this.refresh();
    if (this.timer === null) {
      this.timer = setInterval(() => void this.refresh(), DIAGNOSTICS_REFRESH_MS);
    }
  }

  hide(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    setText(this.copyStatus, "");
  }

  dispose(): void {
    this.hide();
  }

  async refresh(): Promise<void> {
    const r = await api.diagnostics();
    if (r.status === "error") {
      this.loadError.textContent = `Could not read diagnostics: ${r.error.message}`;
      this.loadError.hidden = false;
      return;
    }
    this.loadError.hidden = true;
    this.data = r.data;
    this.paint(r.data);
  }

  private paint(d: Diagnostics): void {
    const rows = diagnosticsRows(d, this.ctx.now());
    const dl = this.list;
    if (dl.children.length !== rows.length * 2) {
      dl.replaceChildren(...rows.flatMap(([k]) => [h("dt", null, k), h("dd")]));
    }
    rows.forEach(([k, v], i) => {
      setText(dl.children[i * 2]!, k);
      setText(dl.children[i * 2 + 1]!, v);
    });

    const events = newestFirst(d);
    const key = `${events.length}:${events[0]?.at_ms ?? 0}:${events[events.length - 1]?.at_ms ?? 0}`;
    if (key !== this.eventsKey) {
      this.eventsKey = key;
      this.events.replaceChildren(
        ...(events.length
          ? events.map((e) =>
              h(
                "li",
                null,
                h("time", { datetime: new Date(e.at_ms).toISOString() }, formatClock(e.at_ms)),
                " ",
                h("span", null, e.text),
              ),
            )
          : [h("li", { class: "muted" }, "No events yet.")]),
      );
    }
    this.copyButton.disabled = false;
  }

  private async copy(): Promise<void> {
    if (!this.data) return;
    const text = diagnosticsReport(this.data, this.ctx.now());
    const clipboard = this.ctx.win.navigator.clipboard;
    try {
      if (!clipboard || typeof clipboard.writeText !== "function") {
        throw new Error("clipboard unavailable");
      }
      await clipboard.writeText(text);
      setText(this.copyStatus, "Copied.");
    } catch {
      setText(this.copyStatus, this.copyFallback(text) ? "Copied." : "Copying is not available here.");
    }
  }

  /** Older webviews: a hidden textarea and `execCommand("copy")`. */
  private copyFallback(text: string): boolean {
    const doc = this.ctx.win.document;
    if (typeof doc.execCommand !== "function") return false;
    const ta = h("textarea", { class: "sr-only", readonly: true, "aria-hidden": "true" });
    ta.value = text;
    doc.body.append(ta);
    ta.select();
    let ok = false;
    try {
      ok = doc.execCommand("copy");
    } catch {
      ok = false;
    }
    ta.remove();
    return ok;
  }
}
