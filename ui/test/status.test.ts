import { describe, expect, it } from "vitest";
import type { Status } from "../src/ipc";
import { canTalk, codeText, statusTicks, statusView } from "../src/status";

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
    const v = statusView(status, NOW);
    expect(v.color).toBe(color);
    expect(v.text).toBe(text);
  });

  it("counts the reconnect down, rounding up, and says now when due", () => {
    const s: Status = { status: "Reconnecting", attempt: 1, max: 5, retry_at_ms: NOW + 2500 };
    expect(statusView(s, NOW).text).toBe("Reconnecting (1/5), next try in 3 s");
    expect(statusView(s, NOW + 1600).text).toBe("Reconnecting (1/5), next try in 1 s");
    expect(statusView(s, NOW + 2500).text).toBe("Reconnecting (1/5), next try now");
    expect(statusView(s, NOW + 9000).text).toBe("Reconnecting (1/5), next try now");
  });

  it("announces reconnecting without the ticking countdown", () => {
    const s: Status = { status: "Reconnecting", attempt: 2, max: 5, retry_at_ms: NOW + 3000 };
    expect(statusView(s, NOW).announce).toBe("Reconnecting (2/5)");
    expect(statusTicks(s)).toBe(true);
    expect(statusTicks({ status: "Connected" })).toBe(false);
  });

  it("prefers the banner's message for Failed", () => {
    const v = statusView({ status: "Failed", code: "TOKEN_EXPIRED" }, NOW, "Token expired at 10:00");
    expect(v).toMatchObject({ color: "red", text: "Failed: Token expired at 10:00" });
  });

  it("degraded without a reason, and an unknown future variant", () => {
    expect(statusView({ status: "Degraded", reason: "" }, NOW).text).toBe("Degraded");
    const future = { status: "Hibernating" } as unknown as Status;
    expect(statusView(future, NOW)).toMatchObject({ color: "grey", text: "Hibernating" });
  });

  it("has a short text for every code and a fallback", () => {
    expect(codeText("TOKEN_INVALID")).toBe("Your sign-in was not accepted. Check the token.");
    expect(codeText("SOMETHING_NEW")).toBe("Something went wrong.");
  });

  it("talking needs media up", () => {
    expect(canTalk({ status: "Connected" })).toBe(true);
    expect(canTalk({ status: "Degraded", reason: "x" })).toBe(true);
    expect(canTalk({ status: "Reconnecting", attempt: 1, max: 2, retry_at_ms: 0 })).toBe(false);
    expect(canTalk({ status: "Offline" })).toBe(false);
  });
});
