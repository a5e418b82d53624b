import { describe, expect, it } from "vitest";

import { insertMention, mentionAt, mentionParts, mentionToken, suggest } from "../src/lib/mentions";

const people = [
  { id: "1", display_name: "Ada Lovelace" },
  { id: "2", display_name: "Bo" },
  { id: "3", display_name: "Adam" },
];

describe("mentions", () => {
  it("finds the mention being typed, not an email address", () => {
    expect(mentionAt("hi @Ad", 6)).toEqual({ start: 3, text: "Ad" });
    expect(mentionAt("@", 1)).toEqual({ start: 0, text: "" });
    expect(mentionAt("hi @[Ada Lo", 11)).toEqual({ start: 3, text: "Ada Lo" });
    expect(mentionAt("mail ada@example", 16)).toBeNull();
    expect(mentionAt("hi @Ada there", 13)).toBeNull();
  });

  it("writes names with spaces in brackets, as the server reads them", () => {
    expect(mentionToken("Bo")).toBe("@Bo");
    expect(mentionToken("Ada Lovelace")).toBe("@[Ada Lovelace]");
  });

  it("suggests prefix matches first", () => {
    expect(suggest(people, "ad").map((p) => p.display_name)).toEqual(["Ada Lovelace", "Adam"]);
    expect(suggest(people, "love").map((p) => p.display_name)).toEqual(["Ada Lovelace"]);
    expect(suggest(people, "").length).toBe(3);
  });

  it("replaces what was typed with the chosen name", () => {
    const value = "hi @ad, look";
    const query = mentionAt(value, 6);
    expect(query).not.toBeNull();
    expect(insertMention(value, 6, query!, "Ada Lovelace")).toEqual({
      value: "hi @[Ada Lovelace] , look",
      caret: 19,
    });
  });

  it("shows mentions as names, without brackets, and leaves email addresses alone", () => {
    expect(mentionParts("thanks @[Bo Chen], see @ada.")).toEqual([
      { text: "thanks ", mention: false },
      { text: "@Bo Chen", mention: true },
      { text: ", see ", mention: false },
      { text: "@ada", mention: true },
      { text: ".", mention: false },
    ]);
    expect(mentionParts("mail ada@example.com or @ or @[unclosed")).toEqual([
      { text: "mail ada@example.com or @ or @[unclosed", mention: false },
    ]);
    expect(mentionParts("@Zoë")).toEqual([{ text: "@Zoë", mention: true }]);
    expect(mentionParts("")).toEqual([]);
  });
});
