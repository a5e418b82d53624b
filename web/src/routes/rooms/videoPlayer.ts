/**
 * The watch party's `Player` (lib/watchsync.ts) over one `<video>` element: the browser's own player for
 * plain files, hls.js (imported on demand, its own chunk) for HLS. A browser that refuses to start sound
 * without a click is answered by starting muted (`onMuted` tells the screen, which offers "Unmute").
 *
 * A lecture whose video studyhall serves itself (an HLS ladder at /api/v1/media/) is named in the party's
 * state without credentials (one state goes to every viewer): `signedUrl` asks REST for this viewer's own
 * signed URL of it (docs/media.md, "Playback and the paywall").
 */
import { messageOf } from "../../lib/errors";
import { PlaybackToken } from "../../lib/media";
import type { Media, Player } from "../../lib/watchsync";

const SEEK_GIVE_UP_MS = 3000;
const MEDIA_PATH = "/api/v1/media/";

export class VideoElementPlayer implements Player {
  private detach: (() => void) | null = null;
  private loadNo = 0;

  constructor(
    private readonly el: HTMLVideoElement,
    private readonly onError: (message: string | null) => void,
    private readonly onMuted: () => void,
    private readonly signedUrl?: (lectureId: string) => Promise<string | null>,
  ) {}

  position(): number {
    return this.el.currentTime || 0;
  }

  isPlaying(): boolean {
    return !this.el.paused;
  }

  load(media: Media | null): void {
    const el = this.el;
    const no = ++this.loadNo;
    this.detach?.();
    this.detach = null;
    this.onError(null);
    el.pause();
    if (media === null || !media.url) {
      el.removeAttribute("src");
      el.load();
      return;
    }
    const url = media.url;
    if (media.kind !== "hls") {
      el.src = url;
      return;
    }
    const ours = media.lecture_id && this.signedUrl && new URL(url, location.href).pathname.startsWith(MEDIA_PATH);
    const source = ours ? this.signedUrl!(media.lecture_id!) : Promise.resolve(url);
    Promise.all([import("hls.js/light"), source])
      .then(([{ default: Hls }, src]) => {
        if (no !== this.loadNo) return;
        if (!src) {
          this.onError("You may not play this lecture.");
          return;
        }
        if (!Hls.isSupported()) {
          if (el.canPlayType("application/vnd.apple.mpegurl")) el.src = src;
          else this.onError("This browser cannot play HLS video.");
          return;
        }
        // A signed URL's token is renewed when refused (lib/media.ts); any other URL is left alone.
        const renew = ours ? () => this.signedUrl!(media.lecture_id!) : () => Promise.resolve(null);
        const token = new PlaybackToken(src, renew);
        const hls = new Hls({ xhrSetup: token.xhrSetup });
        hls.on(Hls.Events.ERROR, (_event, data) => {
          if (token.refused(data, () => hls.startLoad(el.currentTime))) return;
          if (data.fatal) this.onError(`The video could not be played (${data.details}).`);
        });
        hls.loadSource(src);
        hls.attachMedia(el);
        this.detach = () => hls.destroy();
      })
      .catch((e: unknown) => {
        if (no === this.loadNo) this.onError("The player could not be loaded. " + messageOf(e));
      });
  }

  play(): void {
    this.el.play().catch((e: unknown) => {
      if (e instanceof DOMException && e.name === "NotAllowedError" && !this.el.muted) {
        // No click on this page yet: the browser allows muted playback only.
        this.el.muted = true;
        this.onMuted();
        this.el.play().catch(() => {});
      }
    });
  }

  pause(): void {
    this.el.pause();
  }

  setRate(rate: number): void {
    if (Math.abs(this.el.playbackRate - rate) > 1e-6) this.el.playbackRate = rate;
  }

  seek(position: number): Promise<void> {
    const el = this.el;
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        el.removeEventListener("seeked", done);
        el.removeEventListener("loadedmetadata", jump);
        resolve();
      };
      const jump = (): void => {
        el.currentTime = Math.max(0, position);
      };
      const timer = setTimeout(done, SEEK_GIVE_UP_MS);
      el.addEventListener("seeked", done);
      if (el.readyState >= HTMLMediaElement.HAVE_METADATA) jump();
      else el.addEventListener("loadedmetadata", jump, { once: true });
    });
  }

  destroy(): void {
    this.loadNo++;
    this.detach?.();
    this.detach = null;
  }
}
