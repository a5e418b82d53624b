/**
 * Every screen of the app: a URL pattern and the module that renders it (loaded on first visit, each in its
 * own chunk). A new screen is a new line here plus its folder under src/routes/ (docs/web.md, "Layout").
 */
import type { RouteDef } from "../lib/router";

export const routes: readonly RouteDef[] = [
  { path: "/", title: "Home", load: () => import("./Home.svelte") },
  { path: "/login", title: "Log in", access: "guest", load: () => import("./auth/Login.svelte") },
  { path: "/register", title: "Create account", access: "guest", load: () => import("./auth/Register.svelte") },
  { path: "/profile", title: "Profile", load: () => import("./auth/Profile.svelte") },
  {
    path: "/forgot-password",
    title: "Forgot password",
    access: "guest",
    load: () => import("./auth/ForgotPassword.svelte"),
  },
  // The emailed link's page: open to anyone (a signed-in user who follows it is signed out once it is used).
  {
    path: "/reset-password",
    title: "Choose a new password",
    access: "anyone",
    load: () => import("./auth/ResetPassword.svelte"),
  },
  { path: "/courses", title: "Courses", load: () => import("./courses/CoursesPage.svelte") },
  // Courses (docs/web.md, "The course screens"): learners' pages, the player, and the instructor's.
  { path: "/courses/:id", title: "Course", load: () => import("./courses/CoursePage.svelte") },
  { path: "/courses/:id/edit", title: "Edit course", load: () => import("./courses/CourseEditor.svelte") },
  { path: "/courses/:id/learners", title: "Learners", load: () => import("./courses/LearnersPage.svelte") },
  { path: "/courses/:id/gradebook", title: "Gradebook", load: () => import("./courses/GradebookPage.svelte") },
  { path: "/courses/:id/analytics", title: "Analytics", load: () => import("./courses/AnalyticsPage.svelte") },
  { path: "/quizzes/:id", title: "Quiz", load: () => import("./courses/QuizPage.svelte") },
  { path: "/courses/:id/lectures/:lid", title: "Lecture", load: () => import("./courses/LecturePage.svelte") },
  {
    path: "/courses/:id/assignments/:aid",
    title: "Assignment",
    load: () => import("./courses/AssignmentPage.svelte"),
  },
  { path: "/certificates", title: "Certificates", load: () => import("./courses/CertificatesPage.svelte") },
  {
    path: "/certificates/:code",
    title: "Certificate",
    access: "anyone",
    load: () => import("./courses/CertificateCheck.svelte"),
  },
  { path: "/rooms", title: "Rooms", load: () => import("./rooms/RoomsPage.svelte") },
  { path: "/rooms/:id", title: "Room", load: () => import("./rooms/RoomPage.svelte") },
  // The live room of a scheduled session (docs/web.md, "The live room"): lobby, go live, watch, raise hand.
  { path: "/live/:id", title: "Live session", load: () => import("./live/LivePage.svelte") },
  // Direct messages: the conversation list; a conversation opens on the room screen (docs/direct-messages.md).
  { path: "/messages", title: "Messages", load: () => import("./messages/MessagesPage.svelte") },
  // A conversation: the room screen, under Messages (the same screen answers /rooms/{id} for a DM, e.g. from search).
  { path: "/messages/:id", title: "Conversation", load: () => import("./rooms/RoomPage.svelte") },
  { path: "/workspaces", title: "Workspaces", load: () => import("./workspaces/WorkspacesPage.svelte") },
  // The workspace: files, the collaborative editor (CodeMirror loaded on demand), runs (docs/web.md).
  { path: "/workspaces/:id", title: "Workspace", load: () => import("./workspaces/WorkspacePage.svelte") },
  // Contests (docs/web.md, "The contest screens"): the contest, a problem with its editor, the boards, the wallet.
  { path: "/contests", title: "Contests", load: () => import("./contests/ContestsPage.svelte") },
  { path: "/contests/:id", title: "Contest", load: () => import("./contests/ContestPage.svelte") },
  { path: "/contests/:id/problems/:pid", title: "Problem", load: () => import("./contests/ProblemPage.svelte") },
  { path: "/leaderboards", title: "All-time community board", load: () => import("./contests/AllTimePage.svelte") },
  { path: "/wallet", title: "Wallet", load: () => import("./contests/WalletPage.svelte") },
  // Communities: join, members and their roles (docs/web.md, "The community screens").
  { path: "/communities", title: "Communities", load: () => import("./communities/CommunitiesPage.svelte") },
  { path: "/communities/:id", title: "Community", load: () => import("./communities/CommunityPage.svelte") },
  // Search (docs/web.md, "Search"): results grouped by kind, the query in the address.
  { path: "/search", title: "Search", load: () => import("./search/SearchPage.svelte") },
  // Forums (docs/forums.md): a community's or a course's board, and a topic with its threaded replies.
  { path: "/communities/:id/forum", title: "Forum", load: () => import("./forums/CommunityForumPage.svelte") },
  { path: "/courses/:id/forum", title: "Forum", load: () => import("./forums/CourseForumPage.svelte") },
  { path: "/topics/:id", title: "Topic", load: () => import("./forums/TopicPage.svelte") },
  // Administration (platform admins): roles and the audit log.
  { path: "/admin", title: "Administration", load: () => import("./admin/RolesPage.svelte") },
  { path: "/admin/audit", title: "Audit log", load: () => import("./admin/AuditPage.svelte") },
  { path: "/admin/teachers", title: "Applications to teach", load: () => import("./admin/TeachersPage.svelte") },
  { path: "/admin/analytics", title: "Platform analytics", load: () => import("./admin/AnalyticsPage.svelte") },
];

export const notFound: RouteDef = {
  path: "*",
  title: "Page not found",
  access: "anyone",
  load: () => import("./NotFound.svelte"),
};
