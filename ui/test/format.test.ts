import { describe, expect, it } from "vitest";
import { formatHotkey, formatMs, formatPercent, noticeText } from "../src/format";
import { levelToFraction } from "../src/levels";
import { choiceValue, valueChoice } from "../src/views/settings";
import { diagnosticsReport, diagnosticsRows, newestFirst } from "../src/views/diagnostics";
import { makeDiagnostics, NOW } from "./helpers";

const k = (code: string, key: string, mods: Partial<Record<"ctrlKey" | "altKey" | "shiftKey" | "metaKey", boolean>> = {}) => ({
  code,
  key,
  ctrlKey: false,
  altKey: false,
  shiftKey: false,
  metaKey: false,
  ...mods,
});

describe("formatHotkey", () => {
  it("formats combinations the global-shortcut plugin reads", () => {
    expect(formatHotkey(k("F8", "F8"))).toBe("F8");
    expect(formatHotkey(k("Space", " ", { ctrlKey: true, shiftKey: true }))).toBe("Ctrl+Shift+Space");
    expect(formatHotkey(k("KeyT", "t", { altKey: true }))).toBe("Alt+T");
    expect(formatHotkey(k("Digit1", "!", { shiftKey: true }))).toBe("Shift+1");
    expect(formatHotkey(k("KeyK", "k", { metaKey: true, ctrlKey: true }))).toBe("Ctrl+Super+K");
    expect(formatHotkey(k("Backquote", "`"))).toBe("Backquote");
  });

  it("waits while only modifiers are down", () => {
    expect(formatHotkey(k("ShiftLeft", "Shift", { shiftKey: true }))).toBeNull();
    expect(formatHotkey(k("ControlRight", "Control", { ctrlKey: true }))).toBeNull();
  });
});

describe("notices and numbers", () => {
  it("recovered shows seconds with one decimal", () => {
    expect(noticeText({ kind: "recovered", ms: 812 })).toBe("Reconnected in 0.8 s");
    expect(noticeText({ kind: "recovered", ms: 2340 })).toBe("Reconnected in 2.3 s");
  });
  it("talk_ended shows its message", () => {
    expect(noticeText({ kind: "talk_ended", message: "Talk time is up" })).toBe("Talk time is up");
  });
  it("missed names who and how long, in whole seconds", () => {
    expect(noticeText({ kind: "missed", channel: "general", by: "alice", ms: 4180 })).toBe(
      "Missed while reconnecting: alice, 4 s",
    );
    expect(noticeText({ kind: "missed", channel: "general", by: "bob", ms: 300 })).toBe(
      "Missed while reconnecting: bob, 1 s",
    );
  });
  it("formats durations and rates", () => {
    expect(formatMs(812)).toBe("812 ms");
    expect(formatMs(1200)).toBe("1.2 s");
    expect(formatPercent(0.75)).toBe("75%");
    expect(formatPercent(1)).toBe("100%");
  });
  it("maps levels to a dB scale", () => {
    expect(levelToFraction(0)).toBe(0);
    expect(levelToFraction(1)).toBe(1);
    expect(levelToFraction(0.001)).toBeCloseTo(0);
    expect(levelToFraction(0.1)).toBeCloseTo(2 / 3);
  });
  it("device choices round-trip through option values", () => {
    expect(choiceValue("default")).toBe("default");
    expect(choiceValue({ id: "default" })).toBe("id:default");
    expect(valueChoice("id:default")).toEqual({ id: "default" });
    expect(valueChoice("default")).toBe("default");
  });
});

describe("diagnostics report", () => {
  it("lists counters and events newest first", () => {
    const d = makeDiagnostics();
    const rows = Object.fromEntries(diagnosticsRows(d, NOW));
    expect(rows["Success rate"]).toBe("75%");
    expect(rows["Time to recover (last 5)"]).toBe("812 ms, 1.2 s, 640 ms");
    expect(rows["Microphone samples dropped"]).toBe("480");
    expect(newestFirst(d).map((e) => e.text)).toEqual(["joined general", "connected"]);
    const report = diagnosticsReport(d, NOW);
    expect(report).toContain("ICE restarts:");
    expect(report.indexOf("joined general")).toBeLessThan(report.indexOf("connected\n"));
  });
});
