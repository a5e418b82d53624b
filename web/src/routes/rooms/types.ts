/** A room as `GET /rooms` lists it. */
export interface RoomSummary {
  id: string;
  name: string;
  kind: string;
  visibility: string;
  member_count: number;
  my_role: "host" | "moderator" | "member" | null;
}
