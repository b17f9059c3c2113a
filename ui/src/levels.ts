// Level meters, fed by `level-changed` and painted at most once per animation frame.

import { h } from "./dom";
import type { AudioDirection, LevelChanged } from "./ipc";

/** RMS/peak (0..1, linear) to a 0..1 bar on a -60..0 dBFS scale. */
export function levelToFraction(linear: number): number {
  if (!(linear > 0)) return 0;
  const db = 20 * Math.log10(Math.min(linear, 1));
  return Math.max(0, Math.min(1, (db + 60) / 60));
}

export interface Meter {
  el: HTMLElement;
  direction: AudioDirection;
  set(rms: number, peak: number): void;
}

/** A meter (`role="meter"`): `vertical` for the bars beside the PTT button. */
export function createMeter(
  direction: AudioDirection,
  label: string,
  opts: { vertical?: boolean; testid?: string } = {},
): Meter {
  const bar = h("span", { class: "meter-bar" });
  const peak = h("span", { class: "meter-peak" });
  const el = h(
    "span",
    {
      class: `meter${opts.vertical ? " vertical" : ""}`,
      role: "meter",
      "aria-label": label,
      "aria-valuemin": 0,
      "aria-valuemax": 100,
      "aria-valuenow": 0,
      "data-direction": direction,
      "data-testid": opts.testid,
    },
    bar,
    peak,
  );
  let lastPct = -1;
  return {
    el,
    direction,
    set(rms: number, pk: number) {
      const f = levelToFraction(rms);
      const p = Math.max(f, levelToFraction(pk));
      el.style.setProperty("--level", f.toFixed(3));
      el.style.setProperty("--peak", p.toFixed(3));
      const pct = Math.round(f * 100);
      if (pct !== lastPct) {
        lastPct = pct;
        el.setAttribute("aria-valuenow", String(pct));
      }
    },
  };
}

type Reading = { rms: number; peak: number };

/** Holds the latest reading per direction and repaints the registered meters. */
export class LevelHub {
  private readonly meters = new Set<Meter>();
  private readonly latest: Record<AudioDirection, Reading> = {
    tx: { rms: 0, peak: 0 },
    rx: { rms: 0, peak: 0 },
  };
  private cancelFrame: (() => void) | null = null;
  private readonly silence: Partial<Record<AudioDirection, ReturnType<typeof setTimeout>>> = {};

  /** A meter falls back to zero when no reading came for this long. */
  constructor(private readonly holdMs = 400) {}

  add(meter: Meter): void {
    this.meters.add(meter);
    const r = this.latest[meter.direction];
    meter.set(r.rms, r.peak);
  }

  remove(meter: Meter): void {
    this.meters.delete(meter);
  }

  push(level: LevelChanged): void {
    const dir = level.direction;
    if (dir !== "tx" && dir !== "rx") return;
    // Floats arrive as `number | null` (JSON has no NaN): null reads as silence.
    this.latest[dir] = { rms: level.rms ?? 0, peak: level.peak ?? 0 };
    const old = this.silence[dir];
    if (old !== undefined) clearTimeout(old);
    this.silence[dir] = setTimeout(() => {
      this.latest[dir] = { rms: 0, peak: 0 };
      this.schedule();
    }, this.holdMs);
    this.schedule();
  }

  private schedule(): void {
    if (this.cancelFrame !== null) return;
    const run = () => {
      this.cancelFrame = null;
      this.paint();
    };
    if (typeof window.requestAnimationFrame === "function") {
      const id = window.requestAnimationFrame(run);
      this.cancelFrame = () => window.cancelAnimationFrame(id);
    } else {
      const id = window.setTimeout(run, 16);
      this.cancelFrame = () => window.clearTimeout(id);
    }
  }

  /** Paints now (tests, and the frame callback). */
  paint(): void {
    for (const m of this.meters) {
      const r = this.latest[m.direction];
      m.set(r.rms, r.peak);
    }
  }

  dispose(): void {
    this.cancelFrame?.();
    this.cancelFrame = null;
    for (const t of Object.values(this.silence)) if (t !== undefined) clearTimeout(t);
    this.meters.clear();
  }
}
