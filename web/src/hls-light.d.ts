// hls.js ships its light build (no DRM, subtitles or alternate audio: lectures need none of them) without a
// declaration of its own; its API is the full build's.
declare module "hls.js/light" {
  import Hls from "hls.js";
  export default Hls;
}
