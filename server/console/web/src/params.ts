// The custom parameters of a script, found as the user types (the server parses them again on
// submit and is the judge; this only shows what it will find).

const PLACEHOLDER = /\{\{\s*([^{}]*?)\s*\}\}/g;
const NAME = /^[A-Za-z0-9_-]{1,64}$/;
export const BUILTIN_NAMES = ["ACS::InstanceId", "ACS::RegionId", "ACS::InvokeId", "ACS::CommandId"];

export interface Found {
  names: string[];
  problems: string[];
}

export function findParameters(content: string): Found {
  const names: string[] = [];
  const problems: string[] = [];
  for (const match of content.matchAll(PLACEHOLDER)) {
    const name = match[1] ?? "";
    if (name.startsWith("ACS::")) {
      if (!BUILTIN_NAMES.includes(name)) problems.push(`unknown built-in parameter {{${name}}}`);
    } else if (!NAME.test(name)) {
      problems.push(`{{${name}}}: a name is 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'`);
    } else if (!names.includes(name)) {
      names.push(name);
    }
  }
  return { names, problems };
}
