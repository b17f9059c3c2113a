import { describe, expect, it } from "vitest";
import type { Status, StatusPresentation } from "../src/ipc";
import { canTalk, statusTicks, statusView } from "../src/status";
import { PRESENTED, present } from "./presentations";

const NOW = 1_700_000_000_000;

describe("statusView", () => {
  const cases: [Status, string, string][] = [
    [{ status: "Connected" }, "green", "Connected"],
    [{ status: "Connecting" }, "amber", "Connecting…"],
    [{ status: "Degraded", reason: "high packet loss" }, "amber", "Degraded: high packet loss"],
    [
      { status: "Reconnecting", attempt: 2, max: 5, retry_at_ms: NOW + 3000 },
      "amber",
      "Reconnecting (2/5), next try in 3 s",
    ],
    [
      { status: "Failed", code: "SIGNALING_UNREACHABLE" },
      "red",
      "Failed: Cannot reach the server. Check the address.",
    ],
    [{ status: "Offline" }, "grey", "Offline"],
  ];
  it.each(cases)("%j -> %s %s", (status, color, text) => {
    const v = statusView(present(status), NOW);
    expect(v.color).toBe(color);
    expect(v.text).toBe(text);
  });

  it("counts the reconnect down, rounding up, and says now when due", () => {
    const p = present({ status: "Reconnecting", attempt: 1, max: 5, retry_at_ms: NOW + 2500 });
    expect(statusView(p, NOW).text).toBe("Reconnecting (1/5), next try in 3 s");
    expect(statusView(p, NOW + 1600).text).toBe("Reconnecting (1/5), next try in 1 s");
    expect(statusView(p, NOW + 2500).text).toBe("Reconnecting (1/5), next try now");
    expect(statusView(p, NOW + 9000).text).toBe("Reconnecting (1/5), next try now");
  });

  it("announces reconnecting without the ticking countdown", () => {
    const p = present({ status: "Reconnecting", attempt: 2, max: 5, retry_at_ms: NOW + 3000 });
    expect(statusView(p, NOW).announce).toBe("Reconnecting (2/5)");
    expect(statusTicks(p)).toBe(true);
    expect(statusTicks(present({ status: "Connected" }))).toBe(false);
  });

  it("prefers the banner's message for Failed", () => {
    const v = statusView(present({ status: "Failed", code: "TOKEN_EXPIRED" }, "Token expired at 10:00"), NOW);
    expect(v).toMatchObject({ color: "red", text: "Failed: Token expired at 10:00" });
  });

  it("degraded without a reason, and a status this build does not know", () => {
    expect(statusView(present({ status: "Degraded", reason: "" }), NOW).text).toBe("Degraded");
    // A newer core presents its own statuses: shown as it says.
    const future: StatusPresentation = { dot: "grey", label: "Hibernating", countdown_to_ms: null, tooltip: "Roger: hibernating" };
    expect(statusView(future, NOW)).toMatchObject({ color: "grey", text: "Hibernating" });
  });

  it("has a sentence for every code from Rust, never a code name", () => {
    const failed = PRESENTED.filter((c) => c.status.status === "Failed" && c.failure === null);
    expect(failed.length).toBeGreaterThanOrEqual(29);
    for (const c of failed) {
      expect(c.presentation.label).toMatch(/^Failed: [A-Z][^_]*\.$/);
      expect(c.presentation.dot).toBe("red");
    }
    expect(present({ status: "Failed", code: "TOKEN_INVALID" }).label).toBe(
      "Failed: Your sign-in was not accepted. Check the token.",
    );
  });

  it("talking needs media up", () => {
    expect(canTalk({ status: "Connected" })).toBe(true);
    expect(canTalk({ status: "Degraded", reason: "x" })).toBe(true);
    expect(canTalk({ status: "Reconnecting", attempt: 1, max: 2, retry_at_ms: 0 })).toBe(false);
    expect(canTalk({ status: "Offline" })).toBe(false);
  });
});
