import { describe, expect, it } from "vitest";

import { deviceName, passwordProblem } from "../src/lib/account";
import { applicationProblem, parseLinks } from "../src/lib/teaching";

describe("passwordProblem", () => {
  it("asks for 8 characters, counted as characters, not UTF-16 units", () => {
    expect(passwordProblem("short", "short")).toMatch(/at least 8/);
    expect(passwordProblem("🔑🔑🔑🔑🔑🔑🔑", "🔑🔑🔑🔑🔑🔑🔑")).toMatch(/at least 8/);
    expect(passwordProblem("long enough", "long enough")).toBeNull();
  });
  it("wants the two fields to agree", () => {
    expect(passwordProblem("long enough", "long enougH")).toBe("The two passwords differ.");
  });
});

describe("deviceName", () => {
  it("names common browsers and systems", () => {
    const chrome =
      "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
    expect(deviceName(chrome)).toBe("Chrome on Linux");
    expect(deviceName("Mozilla/5.0 (Windows NT 10.0; rv:140.0) Gecko/20100101 Firefox/140.0")).toBe(
      "Firefox on Windows",
    );
    expect(deviceName("")).toBe("Unknown device");
    expect(deviceName("curl/8.0")).toBe("curl/8.0");
  });
});

describe("applying to teach", () => {
  it("reads one link per line and checks them before sending", () => {
    expect(parseLinks(" https://a.example\n\nhttps://b.example \r\n")).toEqual(["https://a.example", "https://b.example"]);
    expect(applicationProblem("too short", [])).toMatch(/at least 20/);
    expect(applicationProblem("I have taught physics for ten years.", ["http://x.example"])).toMatch(/https:\/\//);
    expect(applicationProblem("I have taught physics for ten years.", ["https://x.example"])).toBeNull();
  });
});
