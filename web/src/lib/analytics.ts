/**
 * Analytics dashboards (core_api/analytics/, docs/analytics.md): a course's for its staff, the platform's for
 * admins. The charts are plain SVG drawn by the screens; the geometry is computed here (tested in
 * tests/analytics.test.ts).
 */
import type { ApiClient } from "./api";

export interface EnrollmentDay {
  day: string;
  enrollments: number;
  completions: number;
  total: number;
}

export interface DayCount {
  day: string;
  count: number;
}

export interface WeekCount {
  week: string;
  count: number;
}

export interface Activity {
  daily: DayCount[];
  weekly: WeekCount[];
}

export interface LectureStats {
  lecture_id: string;
  title: string;
  position: number;
  duration_s: number;
  viewers: number;
  completions: number;
  completion_rate: number;
  watched_s: number;
  average_watched_s: number;
  reach: number[];
  retention: number[];
  drop_off_bucket: number | null;
  drop_off_at_s: number | null;
}

export interface ScoreStats {
  item_id: string;
  kind: "quiz" | "assignment";
  title: string;
  max_points: number;
  graded: number;
  mean: number | null;
  buckets: number[];
}

export interface CourseAnalytics {
  course_id: string;
  title: string;
  since: string;
  until: string;
  totals: { enrolled: number; completed: number; active_today: number; active_this_week: number; watched_s: number };
  enrollments: EnrollmentDay[];
  active_learners: Activity;
  lectures: LectureStats[];
  scores: ScoreStats[];
}

export interface PlatformAnalytics {
  since: string;
  until: string;
  totals: {
    users: number;
    courses: number;
    published_courses: number;
    enrollments: number;
    completions: number;
    active_today: number;
    active_this_week: number;
  };
  enrollments: EnrollmentDay[];
  active_learners: Activity;
  top_courses: { course_id: string; title: string; enrollments: number; active_this_week: number }[];
}

/** The windows the screens offer (the server takes any 1-366). */
export const WINDOWS = [7, 30, 90] as const;

const path = encodeURIComponent;

export const courseAnalytics = (api: ApiClient, courseId: string, days: number): Promise<CourseAnalytics> =>
  api.get<CourseAnalytics>(`/courses/${path(courseId)}/analytics`, { days });

export const platformAnalytics = (api: ApiClient, days: number): Promise<PlatformAnalytics> =>
  api.get<PlatformAnalytics>("/admin/analytics", { days });

export interface Bar {
  x: number;
  y: number;
  width: number;
  height: number;
  value: number;
  label: string;
}

/** Vertical bars filling a ``width`` × ``height`` box, scaled to the largest value (at least 1), with a gap of a
 * fifth of a slot between them. */
export function bars(values: number[], labels: string[], width: number, height: number): Bar[] {
  const top = Math.max(1, ...values);
  const slot = values.length ? width / values.length : 0;
  const gap = slot / 5;
  return values.map((value, i) => {
    const h = (value / top) * height;
    return { x: i * slot + gap / 2, y: height - h, width: slot - gap, height: h, value, label: labels[i] ?? "" };
  });
}

/** An SVG polyline's points for ``values`` (0-1) across a ``width`` × ``height`` box, as steps: each value holds
 * over its slot (a retention curve by twentieths). */
export function steps(values: number[], width: number, height: number): string {
  const slot = values.length ? width / values.length : 0;
  const points: string[] = [];
  values.forEach((v, i) => {
    const y = round(height - Math.min(1, Math.max(0, v)) * height);
    points.push(`${round(i * slot)},${y}`, `${round((i + 1) * slot)},${y}`);
  });
  return points.join(" ");
}

const round = (n: number): number => Math.round(n * 10) / 10;

/** "Dec 3" for a UTC day (the server's days are UTC). */
export function dayLabel(day: string): string {
  const d = new Date(`${day}T00:00:00Z`);
  return d.toLocaleDateString("en", { month: "short", day: "numeric", timeZone: "UTC" });
}

/** "42%" */
export const percentText = (share: number): string => `${Math.round(share * 100)}%`;

/** The score range of histogram bucket ``i`` of 10: "0-10%", ..., "90-100%". */
export const bucketLabel = (i: number): string => `${i * 10}-${(i + 1) * 10}%`;

/** Watch time as people read it: "12 min", "3.5 h". */
export function hoursText(seconds: number): string {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  return `${Math.round((seconds / 3600) * 10) / 10} h`;
}

export interface ContestParticipation {
  contest_id: string;
  title: string;
  starts_at: string;
  ends_at: string;
  participants: number;
  submissions: number;
  accepted: number;
  participation_rate: number;
  score: number | null;
  rank: number | null;
}

export interface CommunityAnalytics {
  community_id: string;
  name: string;
  members: number;
  contests: ContestParticipation[];
}

/** A community's contest participation (its admins and owner, platform admins). */
export const communityAnalytics = (api: ApiClient, communityId: string): Promise<CommunityAnalytics> =>
  api.get<CommunityAnalytics>(`/communities/${path(communityId)}/analytics`);
