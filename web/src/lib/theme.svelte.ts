// Light and dark themes: the user's choice, else the system's, remembered in localStorage.

const stored = localStorage.getItem("fmd-theme");
const systemDark = window.matchMedia?.("(prefers-color-scheme: dark)").matches ?? false;

export const theme = $state({ dark: stored ? stored === "dark" : systemDark });

export function applyTheme(): void {
  document.documentElement.dataset.theme = theme.dark ? "dark" : "light";
}

export function toggleTheme(): void {
  theme.dark = !theme.dark;
  localStorage.setItem("fmd-theme", theme.dark ? "dark" : "light");
  applyTheme();
}
